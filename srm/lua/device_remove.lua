-- device_remove: unregister a device of an account and end up to ARGV[6] of its ACTIVE
-- sessions (a lapsed one ends as TIMEOUT at its deadline); end_device.lua ends the rest.
--
-- KEYS[1..11] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- KEYS[12] devices  srm:{sK}:acct:<a>:devices  hash    the device registry
-- KEYS[13] swap     srm:{sK}:acct:<a>:swap     string  when the next removal is allowed (ms)
-- KEYS[14] marker   srm:{sK}:endall:<callId>   string  ended with ARGV[4] by this call so far
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] deviceId  ARGV[4] reason  ARGV[5] retention (ms)
-- ARGV[6] batch  ARGV[7] lifetime of the marker (ms)  ARGV[8] events (_events.lua)
-- ARGV[9] swap cooldown (ms, 0 none)  ARGV[10] '1': skip the cooldown (operator's force),
-- and start none  ARGV[11] who removes it: CLIENT | OPERATOR (device.removed)
-- ARGV[12] ms after which a device that set nothing up is forgotten (it is then unregistered)
-- Returns {1, 1 if more of its sessions are left else 0, ended with ARGV[4] by this call} when
-- removed; {0} when the device is not registered; {-1, ms until a removal is allowed}.
-- The marker makes the call safe to run twice (its reply lost, then resent): a second run
-- finds it and only ends what is left.
local now = server_time(ARGV[1])
local acct = account_keys(ARGV[2], 1)
local device = ARGV[3]
events_config(ARGV[8])
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
if redis.call('EXISTS', KEYS[LIFECYCLE + 3]) == 0 then
  local value = redis.call('HGET', KEYS[LIFECYCLE + 1], device)
  if not value then
    return {0}
  end
  if device_seen(value) < now - tonumber(ARGV[12]) then
    -- forgotten, unless it streams now (setup.lua never forgets a streaming device)
    local records, all = active_records(acct)
    local streams = false
    for _, r in ipairs(records) do
      if r[2] > now and record_strings(all[r[1]])[1] == device then
        streams = true
      end
    end
    if not streams then
      return {0}
    end
  end
  local force, cooldown = ARGV[10] == '1', tonumber(ARGV[9])
  local allowed = tonumber(redis.call('GET', KEYS[LIFECYCLE + 2]) or '0') or 0
  if not force and allowed > now then
    return {-1, allowed - now}
  end
  redis.call('HDEL', KEYS[LIFECYCLE + 1], device)
  if cooldown > 0 and not force then
    -- the time of the next allowed removal, on the scripts' clock; the TTL only cleans up
    redis.call('SET', KEYS[LIFECYCLE + 2], now + cooldown, 'PX', cooldown)
  end
  device_removed(acct.events, now, acct.id, device, device_type(value), ARGV[11])
end
local n, more = end_device_sessions(acct, device, ARGV[4], now, now + tonumber(ARGV[5]),
  tonumber(ARGV[6]))
return {1, more, count_call(KEYS[LIFECYCLE + 3], n, tonumber(ARGV[7]))}
