-- limits: set or remove an account's limit overrides (operator), all in one step, with one
-- limit.changed event per override that changes (setting the value an override already has,
-- or removing one that is not there, changes nothing and writes no event).
--
-- KEYS[1] limit   srm:{sK}:acct:<a>:limit    string  the account limit override
-- KEYS[2] rlimit  srm:{sK}:acct:<a>:rlimit   hash    rule name -> max override
-- KEYS[3] events  srm:{sK}:events            stream  (limit.changed)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] account limit: '' unchanged, '-' remove the override, else the new override
-- ARGV[3] '1': remove every rule override first
-- ARGV[4] events (_events.lua)  ARGV[5] accountId
-- then pairs ARGV[2i+4], ARGV[2i+5]: rule name, its new max ('' removes its override)
-- Returns 1.
local now = server_time(ARGV[1])
local account = ARGV[5]
events_config(ARGV[4])
local function changed(rule, old, new)
  if old ~= new then
    emit(KEYS[3], 'L', now, account, '', '', '', '', '', '', rule, new or '')
  end
end
local old = redis.call('GET', KEYS[1]) or nil  -- nil, not false, when there is none
if ARGV[2] == '-' then
  redis.call('DEL', KEYS[1])
  changed('account', old, nil)
elseif ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
  changed('account', old, ARGV[2])
end
local before, after = {}, {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  before[flat[i]] = flat[i + 1]
  after[flat[i]] = flat[i + 1]
end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  after = {}
end
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
    after[ARGV[i]] = nil
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    after[ARGV[i]] = ARGV[i + 1]
  end
end
local names = {}
for name in pairs(before) do
  names[#names + 1] = name
end
for name in pairs(after) do
  if not before[name] then
    names[#names + 1] = name
  end
end
table.sort(names)
for _, name in ipairs(names) do
  changed(name, before[name], after[name])
end
return 1
