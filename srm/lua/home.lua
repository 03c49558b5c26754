-- home: set or clear an account's home networks (operator), with one home.changed event when
-- they change.
--
-- KEYS[1] home    srm:{sK}:acct:<a>:home  string  the packed networks (srm/network.py)
-- KEYS[2] events  srm:{sK}:events         stream  (home.changed)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] the new networks, packed ('' none)  ARGV[4] events (_events.lua)
-- Returns 1 when they changed, else 0.
local now = server_time(ARGV[1])
events_config(ARGV[4])
local old = redis.call('GET', KEYS[1]) or ''
if old == ARGV[3] then
  return 0
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
home_changed(KEYS[2], now, ARGV[2], ARGV[3], 'OPERATOR')
return 1
