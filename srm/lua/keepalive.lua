-- keepalive: move an ACTIVE, not lapsed session's deadline to now + timeout.
--
-- KEYS[1] sess       srm:{sK}:sess:<sid>        hash  (ka updated unless ARGV[5] is '1')
-- KEYS[2] active     srm:{sK}:acct:<a>:active   zset  sid -> deadline
-- KEYS[3] deadlines  srm:{sK}:deadlines         zset  member -> deadline
-- KEYS[4] ended      srm:{sK}:acct:<a>:ended    hash  (read)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] keep-alive period (ms)
-- ARGV[5] '1': move the deadline only, leaving 'ka' (a setup's confirmation, not a
--         keep-alive: lastKeepAliveAt stays the setup time); else '0' or empty
-- Returns 1 when the deadline moved, 0 when the session is unknown or its record is gone
-- (evicted by Redis: writing 'ka' would recreate a partial record), or how it ended while it
-- is not removed yet: "REASON|endedAtMs[|byDeviceId]" (a lapsed one: "TIMEOUT|deadline").
-- A lapsed session is left for the sweep (or the account's next setup) to end.
local now = server_time(ARGV[1])
local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not score then
  return redis.call('HGET', KEYS[4], ARGV[2]) or 0
end
if tonumber(score) <= now then
  return 'TIMEOUT|' .. score
end
if redis.call('HEXISTS', KEYS[1], 'acct') == 0 then
  return 0
end
local deadline = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], deadline, ARGV[2])
redis.call('ZADD', KEYS[3], deadline, ARGV[3] .. '/' .. ARGV[2])
if ARGV[5] ~= '1' then
  redis.call('HSET', KEYS[1], 'ka', now)
end
return 1
