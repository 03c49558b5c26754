-- Shared fragment, prepended to the scripts that need it (the loader does this): home networks
-- and the device registry of an account (API.md, "Households"; srm/network.py packs them).

-- in_networks: whether the packed `address` (4 or 16 bytes) lies in one of the packed
-- networks of `home`, each "<length><prefix><masked address>" (one byte each, then 4 or 16
-- bytes); an unknown address ('') lies in none.
local function in_networks(home, address)
  local pos = 1
  while pos + 1 <= #home do
    local size, prefix = string.byte(home, pos, pos + 1)
    local network = string.sub(home, pos + 2, pos + 1 + size)
    pos = pos + 2 + size
    if size == #address then
      local whole = math.floor(prefix / 8)
      if string.sub(address, 1, whole) == string.sub(network, 1, whole) then
        local rest = prefix % 8
        if rest == 0 then
          return true
        end
        local unit = 2 ^ (8 - rest)  -- the first `rest` bits of the next byte
        if math.floor(string.byte(address, whole + 1) / unit) ==
            math.floor(string.byte(network, whole + 1) / unit) then
          return true
        end
      end
    end
  end
  return false
end

-- device_seen: the last setup time (ms) of a registry value "<first>,<last>,<deviceType>"
local function device_seen(value)
  return tonumber(string.match(value, '^%d+,(%d+),')) or 0
end

-- device_type: the deviceType of a registry value ('' for the default)
local function device_type(value)
  return string.match(value, '^%d+,%d+,(.*)$') or ''
end

-- device_entry: a registry value "<first>,<last>,<deviceType>" read at once: its first setup
-- time (the text, nil when damaged), its last setup time (ms; 0 when damaged) and its
-- deviceType ('' for the default)
local function device_entry(value)
  local first, last, dt = string.match(value, '^(%d+),(%d+),(.*)$')
  if not first then
    return string.match(value, '^(%d+),'), 0, ''
  end
  return first, tonumber(last), dt
end

-- forget_devices: unregisters the devices of the registry `key` that set nothing up since
-- `before` and do not stream now (`streams(deviceId)`) (device.removed, FORGOTTEN); the
-- devices left
local function forget_devices(key, acct, before, now, streams)
  local flat = redis.call('HGETALL', key)
  local forgotten, left = {}, 0
  for i = 1, #flat, 2 do
    if device_seen(flat[i + 1]) < before and not streams(flat[i]) then
      forgotten[#forgotten + 1] = flat[i]
      device_removed(acct.events, now, acct.id, flat[i], device_type(flat[i + 1]), 'FORGOTTEN')
    else
      left = left + 1
    end
  end
  variadic('HDEL', key, forgotten)
  return left
end
