-- sweep: end ACTIVE sessions of one shard whose keep-alive deadline has passed (TIMEOUT).
-- The caller read the due members first (ZRANGEBYSCORE deadlines, bounded) and passes each
-- one with its account's keys; every member is re-checked here, so a keep-alive, teardown or
-- other reaper that got there first wins and nothing is ended twice.
--
-- KEYS[1] deadlines  srm:{sK}:deadlines   zset member -> deadline
-- KEYS[2] reap       srm:{sK}:reap        zset member -> removal time
-- then for member i (i = 1..n), its account's lifecycle keys (AccountKeys.lifecycle, see
-- end.lua) at KEYS[10i-7] .. KEYS[10i+2]
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] retention (ms)  ARGV[3] events (_events.lua)
-- ARGV[3+i] member "<accountId>/<sessionId>"
-- Returns {ended, stale index entries dropped, index entries moved to a later deadline}.
-- The index changes of the batch go in one variadic ZREM and ZADD each at the end.
local now = server_time(ARGV[1])
local purge_at = now + tonumber(ARGV[2])
local ended, stale, moved = 0, 0, 0
events_config(ARGV[3])
-- the index changes of the whole batch, applied at the end in one ZREM and one ZADD each
-- (the members are distinct, so no later member reads what an earlier one changed)
local moves = {unindexed = {}, queued = {}}
local later = {}
for i = 1, #ARGV - 3 do
  local mbr = ARGV[3 + i]
  local due = redis.call('ZSCORE', KEYS[1], mbr)
  if due and tonumber(due) <= now then
    local sid = string.sub(mbr, -36)
    local acct = account_keys(string.sub(mbr, 1, -38), 10 * i - 7)
    local score = redis.call('ZSCORE', acct.active, sid)
    if not score then
      moves.unindexed[#moves.unindexed + 1] = mbr
      stale = stale + 1
    elseif tonumber(score) <= now then
      ended = ended + end_session(acct, sid, 'TIMEOUT', score, purge_at, nil, moves)
    else
      later[#later + 1] = score
      later[#later + 1] = mbr
      moved = moved + 1
    end
  end
end
variadic('ZREM', KEYS[1], moves.unindexed)
variadic('ZADD', KEYS[2], moves.queued)
variadic('ZADD', KEYS[1], later)
return {ended, stale, moved}
