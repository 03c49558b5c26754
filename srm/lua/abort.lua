-- abort: undo a setup whose outcome the API does not know (Redis timed out mid-call).
-- If the setup ran, the session is ended (TEARDOWN). If it has not run yet, a tombstone
-- session record is written so that a late setup with this sessionId creates nothing; the
-- reaper removes the tombstone after the retention.
--
-- KEYS[1] sess       srm:{sK}:sess:<sid>        hash
-- KEYS[2] active     srm:{sK}:acct:<a>:active   zset
-- KEYS[3] count      srm:{sK}:acct:<a>:count    string
-- KEYS[4] ended      srm:{sK}:acct:<a>:ended    hash
-- KEYS[5] deadlines  srm:{sK}:deadlines         zset
-- KEYS[6] reap       srm:{sK}:reap              zset
-- KEYS[7] usage      srm:{sK}:acct:<a>:usage    hash   (usage of the day it ends)
-- KEYS[8] events     srm:{sK}:events            stream (session.ended)
-- KEYS[9] sessions   srm:{sK}:sess:             the shard's record prefix
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] retention (ms)  ARGV[5] events (_events.lua)
-- Returns 1 ended, 2 already ended, 3 tombstone written, -2 sessionId of another account.
local now = server_time(ARGV[1])
local sid, account = ARGV[2], ARGV[3]
local mbr = account .. '/' .. sid
local purge_at = now + tonumber(ARGV[4])
local owner = redis.call('HGET', KEYS[1], 'acct')
if owner and owner ~= account then
  return -2
end
if not owner then
  redis.call('HSET', KEYS[1], 'acct', account, 'tomb', 1)
  redis.call('ZADD', KEYS[6], purge_at, mbr)
  return 3
end
local ev = event_context(KEYS[8], ARGV[5], KEYS[7], KEYS[9], account)
if end_session(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], sid, mbr, 'TEARDOWN', now, purge_at, ev) == 1 then
  return 1
end
return 2
