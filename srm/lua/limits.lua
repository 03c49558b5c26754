-- limits: set or remove an account's limit overrides (operator), all in one step.
--
-- KEYS[1] limit   srm:{sK}:acct:<a>:limit    string  the account limit override
-- KEYS[2] rlimit  srm:{sK}:acct:<a>:rlimit   hash    rule name -> max override
-- ARGV[1] clock override (unused; every script takes it)
-- ARGV[2] account limit: '' unchanged, '-' remove the override, else the new override
-- ARGV[3] '1': remove every rule override first
-- then pairs ARGV[2i+2], ARGV[2i+3]: rule name, its new max ('' removes its override)
-- Returns 1.
if ARGV[2] == '-' then
  redis.call('DEL', KEYS[1])
elseif ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
end
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
