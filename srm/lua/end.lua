-- end: teardown (client or operator) of one session, exactly once however often it is
-- retried or raced. A session whose deadline has already passed ends as TIMEOUT.
--
-- KEYS[1] active     srm:{sK}:acct:<a>:active   zset
-- KEYS[2] count      srm:{sK}:acct:<a>:count    string
-- KEYS[3] ended      srm:{sK}:acct:<a>:ended    hash
-- KEYS[4] deadlines  srm:{sK}:deadlines         zset
-- KEYS[5] reap       srm:{sK}:reap              zset
-- KEYS[6] usage      srm:{sK}:acct:<a>:usage    hash   (usage of the day it ends)
-- KEYS[7] events     srm:{sK}:events            stream (session.ended)
-- KEYS[8] sessions   srm:{sK}:sess:             the shard's record prefix
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] reason  ARGV[5] retention (ms)
-- ARGV[6] events (_events.lua)
-- Returns 1 ended now, 2 already ended (not yet removed), 0 no such session for this account.
local now = server_time(ARGV[1])
local sid = ARGV[2]
local score = redis.call('ZSCORE', KEYS[1], sid)
if score then
  local reason, ended_at = ARGV[4], now
  if tonumber(score) <= now then
    reason, ended_at = 'TIMEOUT', score
  end
  end_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], sid, ARGV[3] .. '/' .. sid,
    reason, ended_at, now + tonumber(ARGV[5]), event_context(KEYS[7], ARGV[6], KEYS[6], KEYS[8], ARGV[3]))
  return 1
end
if redis.call('HEXISTS', KEYS[3], sid) == 1 then
  return 2
end
return 0
