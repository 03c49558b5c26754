-- sweep: end ACTIVE sessions of one shard whose keep-alive deadline has passed (TIMEOUT).
-- The caller read the due accounts first (ZRANGEBYSCORE due, bounded) and passes each one
-- with its keys; every account is re-checked here, so a keep-alive, teardown or other reaper
-- that got there first wins and nothing is ended twice.
--
-- KEYS[1..8] the shard's keys (AccountKeys.shard_keys, _account.lua): due, reap, ...
-- then for account i (i = 1..n), its own keys (AccountKeys.own, nth_account)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] retention (ms)  ARGV[3] events (_events.lua)  ARGV[3+i] accountId i
-- Returns {sessions ended, accounts whose due score moved with nothing ended}. The removal
-- queue gets the batch's sessions in one variadic ZADD at the end.
local now = server_time(ARGV[1])
local purge_at = now + tonumber(ARGV[2])
events_config(ARGV[3])
usage_batch()
local ended, moved, queued = 0, 0, {}
for i = 1, #ARGV - 3 do
  local acct = nth_account(ARGV[3 + i], i)
  migrate(acct)
  local score = redis.call('ZSCORE', acct.due, acct.id)
  if score and tonumber(score) <= now then
    local n = end_lapsed(acct, now, purge_at, 1000, queued)
    ended = ended + n
    if n == 0 then
      moved = moved + 1
    end
  end
end
variadic('ZADD', KEYS[2], queued)
usage_flush()
return {ended, moved}
