-- limit: set or remove an account's limit override (operator), with its limit.changed event.
-- Only a change is an event: setting the value the override already has, or removing an
-- override that is not there, changes nothing and writes nothing.
--
-- KEYS[1] limit   srm:{sK}:acct:<a>:limit   string  the override
-- KEYS[2] events  srm:{sK}:events           stream  (limit.changed)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] new override, or '' to remove it  ARGV[4] events (_events.lua)
-- Returns 1 changed, 0 unchanged.
local now = server_time(ARGV[1])
local old = redis.call('GET', KEYS[1])
if ARGV[3] == '' then
  if redis.call('DEL', KEYS[1]) == 0 then
    return 0
  end
else
  if old == ARGV[3] then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[3])
end
emit(KEYS[2], ARGV[4], 'L', now, ARGV[2], '', '', '', '', '', '', ARGV[3], '')
return 1
