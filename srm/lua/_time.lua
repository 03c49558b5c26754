-- Shared fragment, prepended to every script that needs the time (the loader does this).
--
-- server_time: now in ms on the Redis server's clock, the one clock of every SRM host. The
-- caller passes a clock override (ARGV[1]) only in tests; in service it is empty.
-- Redis 5+ replicates a script's effects, so reading TIME before writing is safe.
-- SERVER_SECONDS: the seconds of the TIME that server_time read in this call, nil when it
-- read none (a clock override): the stream trim (_events.lua) reads TIME only then. Every
-- script calls server_time first, so it never holds another call's time.
local SERVER_SECONDS = nil
local function server_time(override)
  if override ~= nil and override ~= '' then
    SERVER_SECONDS = nil
    return tonumber(override)
  end
  -- TIME's two numbers converted by arithmetic: tonumber converts a string twice (a check,
  -- then the conversion, each a libc strtod of ~1k instructions)
  local t = redis.call('TIME')
  SERVER_SECONDS = t[1] + 0
  return SERVER_SECONDS * 1000 + math.floor(t[2] / 1000)
end

-- kept across calls: the text of each integer 0..SMALL - 1 that digits() made, and the number
-- of each text of at most three characters that number_of() converted. Memos of pure
-- conversions (an entry found or made gives the same answer), bounded by what they may hold:
-- a lookup costs a few dozen instructions, a conversion by libc about a thousand, and the
-- lengths in a record, the counters and the usage of a day are nearly all small.
local DIGITS_OF, NUMBER_OF = {}, {}
local SMALL = 1024

-- A memo of what SRM passes the same at every call (settings, rule sets): its entries (key
-- -> value), how many it holds, and at most how many (then it starts over).
local function memo(kept)
  return {entries = {}, held = 0, kept = kept}
end

-- remember: keeps `value` under `key` in memo `m`; `value`
local function remember(m, key, value)
  if m.held >= m.kept then
    m.entries, m.held = {}, 0
  end
  m.entries[key] = value
  m.held = m.held + 1
  return value
end

-- kept across calls: the number of each setting text setting() converted (SRM passes the same
-- few at every call: periods, retention, bounds)
local SETTINGS = memo(256)

-- digits: the decimal text of the integer `n` (a time in ms, a count). Lua's own conversion
-- of a number (`..`, tostring, table.concat, a number given to redis.call) formats it with
-- "%.14g" or "%.17g", which costs libc two to four times what "%d" does.
local function digits(n)
  local text = DIGITS_OF[n]
  if text then
    return text
  end
  text = string.format('%d', n)
  if n >= 0 and n < SMALL and n % 1 == 0 then
    DIGITS_OF[n] = text
  end
  return text
end

-- setting: the number of a setting SRM passes as text (an ARGV), which SRM checked
local function setting(text)
  return SETTINGS.entries[text] or remember(SETTINGS, text, text + 0)
end

-- number_of: tonumber(v) (nil when v is not a number), for a counter read from Redis
local function number_of(v)
  local n = NUMBER_OF[v]
  if n then
    return n
  end
  n = tonumber(v)
  if n and type(v) == 'string' and #v <= 3 then
    NUMBER_OF[v] = n
  end
  return n
end
