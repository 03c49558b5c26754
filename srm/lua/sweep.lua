-- sweep: end ACTIVE sessions of one shard whose keep-alive deadline has passed (TIMEOUT).
-- The caller read the due accounts first (ZRANGEBYSCORE due, bounded) and passes each one
-- with its keys; every account is re-checked here, so a keep-alive, teardown or other reaper
-- that got there first wins and nothing is ended twice.
--
-- KEYS[1..8] the shard's keys (AccountKeys.shard_keys, _account.lua): due, reap, ...
-- then for account i (i = 1..n), its own keys (AccountKeys.own, nth_account)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] retention (ms)  ARGV[3] events (_events.lua)  ARGV[3+i] accountId i
-- Returns {sessions ended, accounts visited with nothing ended (their due score moved to
-- their earliest deadline, or removed), sessions of those ended removed at once}.
-- The records are the check: end_lapsed ends only sessions whose own deadline has passed
-- and sets the account's due score exactly, so an account whose score was moved or removed
-- since the caller read it (a keep-alive, a teardown, another reaper) is merely visited;
-- reading the due scores first (ZMSCORE) cost more than it spared.
-- Per batch, not per account or session: one EXISTS for the accounts' 0.x keys; the removal
-- queue, the due index and the shard's count of ACTIVE sessions are written once at the
-- end (end_lapsed, shard_flush). With a retention of 0 an account whose sessions all lapsed
-- has their records removed at once (end_lapsed), not queued for the purge.
local now = server_time(ARGV[1])
local purge_at = now + tonumber(ARGV[2])
events_config(ARGV[3])
usage_batch()
local count = #ARGV - 3
local accounts, legacy = {}, {}
for i = 1, count do
  local acct = nth_account(ARGV[3 + i], i)
  accounts[i] = acct
  local p = acct.legacy
  legacy[#legacy + 1] = p .. 'active'
  legacy[#legacy + 1] = p .. 'ended'
  legacy[#legacy + 1] = p .. 'usage'
  legacy[#legacy + 1] = p .. 'rules'
  legacy[#legacy + 1] = p .. 'count'
end
local moves = 0  -- accounts with 0.x data (migrate, _legacy.lua)
for first = 1, #legacy, UNPACK_MAX do
  local last = math.min(#legacy, first + UNPACK_MAX - 1)
  moves = moves + redis.call('EXISTS', unpack(legacy, first, last))
end
local ended, moved, queued, shard = 0, 0, {}, shard_batch()
for i = 1, count do
  local acct = accounts[i]
  if moves > 0 then
    migrate(acct)
  end
  local n = end_lapsed(acct, now, purge_at, 1000, queued, shard)
  ended = ended + n
  if n == 0 then
    moved = moved + 1
  end
end
variadic('ZADD', KEYS[2], queued)
usage_flush()
if count > 0 then
  shard_flush(accounts[1], shard)
end
return {ended, moved, shard.removed}
