-- purge: remove ENDED sessions of one shard whose retention has passed, with every key and
-- index entry that mentions them. The caller read the due members first (ZRANGEBYSCORE reap,
-- bounded); each is re-checked here, so two reapers never remove anything twice.
--
-- KEYS[1] reap  srm:{sK}:reap   zset member -> removal time
-- then for member i (i = 1..n):
-- KEYS[3i-1] sess    srm:{sK}:sess:<sid>          KEYS[3i] active  srm:{sK}:acct:<a>:active
-- KEYS[3i+1] ended   srm:{sK}:acct:<a>:ended
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[1+i] member "<accountId>/<sessionId>"
-- Returns {removed, skipped because still active}.
local now = server_time(ARGV[1])
local removed, skipped = 0, 0
-- the batch's removals from the reap queue and its record keys, in one variadic ZREM and
-- one DEL at the end (the members are distinct)
local dequeued, records = {}, {}
for i = 1, #ARGV - 1 do
  local mbr = ARGV[1 + i]
  local due = redis.call('ZSCORE', KEYS[1], mbr)
  if due and tonumber(due) <= now then
    local sess, active, endedk = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
    local sid = string.sub(mbr, -36)
    dequeued[#dequeued + 1] = mbr
    if redis.call('ZSCORE', active, sid) then
      -- never remove a session that is still active; it is queued again when it ends
      skipped = skipped + 1
    else
      records[#records + 1] = sess
      redis.call('HDEL', endedk, sid)
      removed = removed + 1
    end
  end
end
variadic('ZREM', KEYS[1], dequeued)
variadic('DEL', nil, records)
return {removed, skipped}
