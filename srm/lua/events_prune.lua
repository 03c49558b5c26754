-- events_prune: remove consumers of a group that hold no event: this process's own when it
-- stops (ARGV[4]), and any other idle for longer than ARGV[3] ms (a consumer that died with
-- nothing pending; consumer names are unique per start, so without this they pile up).
-- A consumer holding events is never removed: XGROUP DELCONSUMER would drop its events.
--
-- KEYS[1] events  srm:{sK}:events  stream
-- ARGV[1] clock override (unused)  ARGV[2] group  ARGV[3] idle ms  ARGV[4] consumer ('' none)
-- Returns how many consumers were removed.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local removed = 0
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[2])
if not ok then  -- no such group yet
  return 0
end
for _, raw in ipairs(consumers) do
  local c = {}
  for i = 1, #raw, 2 do
    c[raw[i]] = raw[i + 1]
  end
  local idle = tonumber(c['idle']) > tonumber(ARGV[3])
  if tonumber(c['pending']) == 0 and (c['name'] == ARGV[4] or idle) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[2], c['name'])
    removed = removed + 1
  end
end
return removed
