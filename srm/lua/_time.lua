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

-- digits: the decimal text of the integer `n` (a time in ms, a count). Lua's own conversion
-- of a number (`..`, tostring, table.concat, a number given to redis.call) formats it with
-- "%.14g" or "%.17g", which costs libc two to four times what "%d" does.
local function digits(n)
  return string.format('%d', n)
end
