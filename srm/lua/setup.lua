-- setup: create a session if the account is under its limit. Idempotent on the sessionId,
-- which the caller generates before the call (a retried call finds its own session).
--
-- KEYS[1] sess       srm:{sK}:sess:<sid>               hash   (created)
-- KEYS[2] active     srm:{sK}:acct:<a>:active          zset   sid -> deadline
-- KEYS[3] count      srm:{sK}:acct:<a>:count           string active counter
-- KEYS[4] limit      srm:{sK}:acct:<a>:limit           string override (read)
-- KEYS[5] ended      srm:{sK}:acct:<a>:ended           hash   (lapsed/evicted sessions)
-- KEYS[6] deadlines  srm:{sK}:deadlines                zset   member -> deadline
-- KEYS[7] reap       srm:{sK}:reap                     zset   member -> removal time
-- KEYS[8] usage      srm:{sK}:acct:<a>:usage           hash   usage per UTC day
-- KEYS[9] events     srm:{sK}:events                   stream session.started/ended/denied
-- KEYS[10] sessions  srm:{sK}:sess:                    the shard's record prefix
-- KEYS[11] denials  srm:{sK}:denials:                the shard's prefix of the day's ranking
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] deviceId
-- ARGV[5] contentID  ARGV[6] contentType  ARGV[7] keep-alive period (ms)  ARGV[8] default limit
-- ARGV[9] retention (ms)  ARGV[10] policy: 'deny' | 'evict'  ARGV[11] events (_events.lua)
-- Returns {status, active, limit}: status 1 created, 2 created by an earlier try of this
-- call, 0 denied (limit reached), -1 the service gave up on this sessionId (tombstone),
-- -2 the sessionId belongs to another account of this shard (UUID collision).
-- Lapsed sessions of the account are ended first (TIMEOUT), so they never block a new one.
-- A denial leaves a short-lived record (acct, denied) so that a retry of the call reports
-- the same denial without counting it again.
local now = server_time(ARGV[1])
local sid, account = ARGV[2], ARGV[3]
local owner = redis.call('HGET', KEYS[1], 'acct')
if owner then
  if owner ~= account then
    return {-2, 0, 0}
  end
  if redis.call('HEXISTS', KEYS[1], 'tomb') == 1 then
    return {-1, 0, 0}
  end
  local live = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
  if redis.call('HEXISTS', KEYS[1], 'denied') == 1 then
    return {0, live, tonumber(redis.call('GET', KEYS[4]) or ARGV[8])}
  end
  return {2, live, 0}
end

local purge_at = now + tonumber(ARGV[9])
local ev = event_context(KEYS[9], ARGV[11], KEYS[8], KEYS[10], account)
end_lapsed(KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7], account, now, purge_at, 1000, ev)

local limit = tonumber(redis.call('GET', KEYS[4]) or ARGV[8])
local live = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
if live >= limit then
  if ARGV[10] ~= 'evict' or limit <= 0 then
    redis.call('HSET', KEYS[1], 'acct', account, 'denied', 1)
    redis.call('PEXPIRE', KEYS[1], 60000)
    emit(KEYS[9], ARGV[11], 'D', now, account, '', ARGV[4], '', ARGV[5], ARGV[6], '', 'account', '')
    usage_add(KEYS[8], now, 'denied', 0, live)
    denial_add(KEYS[11], now, account)
    return {0, live, limit}
  end
  -- evict the sessions with the oldest keep-alive (the earliest deadline) to make room
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'LIMIT', 0, live - limit + 1)
  for _, victim in ipairs(oldest) do
    live = live - end_session(KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7], victim,
      account .. '/' .. victim, 'EVICTED', now, purge_at, ev)
  end
end

local deadline = now + tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'acct', account, 'dev', ARGV[4], 'cid', ARGV[5], 'ctype', ARGV[6],
  'created', now, 'ka', now)
redis.call('ZADD', KEYS[2], deadline, sid)
redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[6], deadline, account .. '/' .. sid)
emit(KEYS[9], ARGV[11], 'S', now, account, sid, ARGV[4], '', ARGV[5], ARGV[6], '', '', '')
usage_add(KEYS[8], now, 'started', 0, live + 1)
return {1, live + 1, limit}
