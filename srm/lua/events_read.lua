-- events_read: the next events of one shard's stream for one consumer of a group
-- (XREADGROUP), counting the events that were trimmed before the group read them.
--
-- A group seen for the first time is created at the oldest event kept (MKSTREAM when the
-- shard has none yet). The group's read counter (entries-read, Redis 7) is the position of
-- the last event it was given; when the oldest event kept lies beyond it, the events in
-- between were trimmed unread: they are counted here, once for the group whichever consumer
-- reads, and the counter is moved past them (XGROUP SETID ... ENTRIESREAD) so that the
-- group's lag stays right. Redis 6.2 has no such counter: a gap is reported as -1 (lost,
-- count unknown).
--
-- KEYS[1] events  srm:{sK}:events  stream
-- ARGV[1] clock override (unused: the stream's ids are the server's time)
-- ARGV[2] group  ARGV[3] consumer  ARGV[4] count
-- Returns {lost, entries}: entries as XREADGROUP gives them ({} when none).
local stream, group = KEYS[1], ARGV[2]

local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

local function before(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams < bms or (ams == bms and tonumber(aseq) < tonumber(bseq))
end

local lost = 0
local fresh = false
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  fresh = true
end
local info = fields(redis.call('XINFO', 'STREAM', stream))
local g
for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local t = fields(raw)
  if t['name'] == group then
    g = t
    break
  end
end
local trimmed  -- events ever added that are no longer in the stream (Redis 7)
if info['entries-added'] then
  trimmed = tonumber(info['entries-added']) - tonumber(info['length'])
end
if not g then
  redis.call('XGROUP', 'CREATE', stream, group, '0')
  fresh = true
end
if fresh then
  if trimmed then  -- positioned before the oldest event kept: nothing lost to this group
    redis.call('XGROUP', 'SETID', stream, group, '0', 'ENTRIESREAD', trimmed)
  end
else
  local first = info['first-entry']
  local last = g['last-delivered-id']
  if first and before(last, first[1]) then
    local read = tonumber(g['entries-read'])
    if trimmed and read then
      if read < trimmed then
        lost = trimmed - read
        redis.call('XGROUP', 'SETID', stream, group, last, 'ENTRIESREAD', trimmed)
      end
    elseif last ~= '0-0' then
      lost = -1
    end
  end
end
local reply = redis.call('XREADGROUP', 'GROUP', group, ARGV[3], 'COUNT', tonumber(ARGV[4]),
  'STREAMS', stream, '>')
if not reply then
  return {lost, {}}
end
return {lost, reply[1][2]}
