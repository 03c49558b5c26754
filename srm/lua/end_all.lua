-- end_all: end up to ARGV[4] ACTIVE sessions of one account (operator), lapsed ones as TIMEOUT.
--
-- KEYS[1] active     srm:{sK}:acct:<a>:active   zset
-- KEYS[2] count      srm:{sK}:acct:<a>:count    string
-- KEYS[3] ended      srm:{sK}:acct:<a>:ended    hash
-- KEYS[4] deadlines  srm:{sK}:deadlines         zset
-- KEYS[5] reap       srm:{sK}:reap              zset
-- KEYS[6] usage      srm:{sK}:acct:<a>:usage    hash   (usage of the day they end)
-- KEYS[7] events     srm:{sK}:events            stream (session.ended, one per session)
-- KEYS[8] sessions   srm:{sK}:sess:             the shard's record prefix
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] reason  ARGV[4] batch  ARGV[5] retention (ms)
-- ARGV[6] events (_events.lua)
-- Returns {ended with ARGV[3], ended as TIMEOUT, sessions still active}.
local now = server_time(ARGV[1])
local purge_at = now + tonumber(ARGV[5])
local ev = event_context(KEYS[7], ARGV[6], KEYS[6], KEYS[8], ARGV[2])
local lapsed = end_lapsed(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], now, purge_at,
  tonumber(ARGV[4]), ev)
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
local n = 0
for _, sid in ipairs(ids) do
  n = n + end_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], sid, ARGV[2] .. '/' .. sid,
    ARGV[3], now, purge_at, ev)
end
return {n, lapsed, redis.call('ZCARD', KEYS[1])}
