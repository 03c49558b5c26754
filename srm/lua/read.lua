-- read: an account's hash (or one session's record) and its limit override, 0.x data moved
-- first, in one call; a listing also gets one page of the account's ENDED records.
--
-- KEYS[1..11] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- KEYS[12] limit  srm:{sK}:acct:<a>:limit  string (read)
-- ARGV[1] accountId  ARGV[2] sessionId, or '' for the whole account hash
-- ARGV[3] where the page of ENDED records starts: an HSCAN position of the ENDED hash
-- ARGV[4] the last sessionId listed from the HSCAN batch at that position ('' none)
-- ARGV[5] how many ENDED records the page needs at least (0: none); whole batches of BATCH
-- buckets are read until there are as many
-- Returns {limit override or false, the record (or false)} for a sessionId, else
-- {limit override or false, {field, value...} (the account hash: ACTIVE records, counters,
-- usage), {position, sessionId, record...} (ENDED records, each with the HSCAN position of its
-- batch; in the first batch only those after ARGV[4]), the position after the last batch read
-- ('0': the ENDED hash is read to its end)}. Whole HSCAN batches are read until the page has
-- enough, so the work is the account's ACTIVE records and about one page of ENDED ones.
local acct = account_keys(ARGV[1], 1)
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
local limit = redis.call('GET', KEYS[LIFECYCLE + 1])
if ARGV[2] ~= '' then
  return {limit, find_record(acct, ARGV[2])}
end
-- later: whether a comes after b byte by byte, as Python orders them (Lua's < follows the
-- server's locale, which may skip the '-' of a UUID)
local function later(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return #a > #b
end
-- the COUNT of every HSCAN: the same at every read, so a position read again gives the same
-- batch (as long as the hash is not resized)
local BATCH = 100
local ended, position, after, want = {}, ARGV[3], ARGV[4], tonumber(ARGV[5])
local found = 0
while want > 0 and found < want do
  local batch = redis.call('HSCAN', acct.ended, position, 'COUNT', BATCH)
  for i = 1, #batch[2], 2 do
    local sid = batch[2][i]
    if after == '' or later(sid, after) then
      ended[#ended + 1] = position
      ended[#ended + 1] = sid
      ended[#ended + 1] = batch[2][i + 1]
      found = found + 1
    end
  end
  after = ''
  position = batch[1]
  if position == '0' then
    break
  end
end
if want == 0 then
  position = '0'
end
return {limit, redis.call('HGETALL', acct.state), ended, position}
