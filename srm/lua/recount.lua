-- recount: count a shard's ACTIVE sessions whole, into its count (the `active` hash), once.
-- Every script keeps the count by the changes it makes (active_add); this gives it its first
-- value where sessions were set up by a version before the count (or where an operator
-- removed the `recounted` field to have it counted again). The reaper calls it for a shard
-- whose count has no `recounted` field; a shard that has one is left as it is.
--
-- KEYS[1..8] the shard's keys (AccountKeys.shard_keys, _account.lua): due, ..., active
-- KEYS[9] srm:{sK}:a:  the prefix of the shard's account hashes (Keys.account_prefix)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] '1': count it whole even if it was (drift no script made: an account hash evicted
--         by Redis, a version without the count still writing); else '0' or empty
-- Returns the count. The work is one HGET per account of the due index (every account with an
-- ACTIVE session is in it), once per shard.
local now = server_time(ARGV[1])
local active = KEYS[7]  -- the shard's 'active' (SHARD's 7th)
if ARGV[2] ~= '1' and redis.call('HEXISTS', active, 'recounted') == 1 then
  return tonumber(redis.call('HGET', active, N) or '0')
end
local total = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + (tonumber(redis.call('HGET', KEYS[SHARD + 1] .. id, N) or '0') or 0)
end
redis.call('HSET', active, N, total, 'recounted', now)
return total
