-- read: an account's hash (or one session's record) and its limit override, 0.x data moved
-- first, in one call.
--
-- KEYS[1..8] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- KEYS[9] limit  srm:{sK}:acct:<a>:limit  string (read)
-- ARGV[1] accountId  ARGV[2] sessionId, or '' for the whole hash
-- Returns {limit override or false, the record (or false)} for a sessionId, else
-- {limit override or false, field, value, field, value...} (HGETALL).
local acct = account_keys(ARGV[1], 1)
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
local limit = redis.call('GET', KEYS[9])
if ARGV[2] ~= '' then
  return {limit, redis.call('HGET', acct.state, ARGV[2])}
end
local flat = redis.call('HGETALL', acct.state)
table.insert(flat, 1, limit)
return flat
