-- abort: undo a setup whose outcome the API does not know (Redis timed out mid-call).
-- If the setup ran, the session is ended (TEARDOWN). If it has not run yet, a tombstone
-- session record is written so that a late setup with this sessionId creates nothing; the
-- reaper removes the tombstone after the retention.
--
-- KEYS[1] sess       srm:{sK}:sess:<sid>        hash
-- KEYS[2..11] the account's lifecycle keys (AccountKeys.lifecycle, see end.lua)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] retention (ms)  ARGV[5] events (_events.lua)
-- Returns 1 ended, 2 already ended, 3 tombstone written, -2 sessionId of another account.
local now = server_time(ARGV[1])
local sid, account = ARGV[2], ARGV[3]
local acct = account_keys(account, 2)
events_config(ARGV[5])
local purge_at = now + tonumber(ARGV[4])
local owner = redis.call('HGET', KEYS[1], 'acct')
if owner and owner ~= account then
  return -2
end
if not owner then
  redis.call('HSET', KEYS[1], 'acct', account, 'tomb', 1)
  redis.call('ZADD', acct.reap, purge_at, account .. '/' .. sid)
  return 3
end
if end_session(acct, sid, 'TEARDOWN', now, purge_at, nil) == 1 then
  return 1
end
return 2
