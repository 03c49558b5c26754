-- sweep: end ACTIVE sessions of one shard whose keep-alive deadline has passed (TIMEOUT).
-- The caller read the due members first (ZRANGEBYSCORE deadlines, bounded) and passes each
-- one with its account's keys; every member is re-checked here, so a keep-alive, teardown or
-- other reaper that got there first wins and nothing is ended twice.
--
-- KEYS[1] deadlines  srm:{sK}:deadlines   zset member -> deadline
-- KEYS[2] reap       srm:{sK}:reap        zset member -> removal time
-- KEYS[3] events     srm:{sK}:events      stream (session.ended)
-- KEYS[4] sessions   srm:{sK}:sess:       the shard's record prefix
-- then for member i (i = 1..n), four keys of its account:
-- KEYS[4i+1] active  srm:{sK}:acct:<a>:active   KEYS[4i+2] count  srm:{sK}:acct:<a>:count
-- KEYS[4i+3] ended   srm:{sK}:acct:<a>:ended    KEYS[4i+4] usage  srm:{sK}:acct:<a>:usage
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] retention (ms)  ARGV[3] events (_events.lua)
-- ARGV[3+i] member "<accountId>/<sessionId>"
-- Returns {ended, stale index entries dropped, index entries moved to a later deadline}.
local now = server_time(ARGV[1])
local purge_at = now + tonumber(ARGV[2])
local ended, stale, moved = 0, 0, 0
for i = 1, #ARGV - 3 do
  local mbr = ARGV[3 + i]
  local due = redis.call('ZSCORE', KEYS[1], mbr)
  if due and tonumber(due) <= now then
    local active, count, endedk = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3]
    local sid = string.sub(mbr, -36)
    local ev = event_context(KEYS[3], ARGV[3], KEYS[4 * i + 4], KEYS[4], string.sub(mbr, 1, -38))
    local score = redis.call('ZSCORE', active, sid)
    if not score then
      redis.call('ZREM', KEYS[1], mbr)
      stale = stale + 1
    elseif tonumber(score) <= now then
      ended = ended + end_session(active, count, endedk, KEYS[1], KEYS[2], sid, mbr, 'TIMEOUT',
        score, purge_at, ev)
    else
      redis.call('ZADD', KEYS[1], score, mbr)
      moved = moved + 1
    end
  end
end
return {ended, stale, moved}
