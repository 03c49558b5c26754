-- purge: remove ENDED sessions of one shard whose retention has passed (and tombstones). The
-- caller read the due members first (ZRANGEBYSCORE reap, bounded); each is re-checked here, so
-- two reapers never remove anything twice.
--
-- KEYS[1..8] the shard's keys (AccountKeys.shard_keys, _account.lua): due, reap, events,
-- denials, legacy_sessions (the 0.x record prefix), legacy_deadlines, active
-- then for member i (i = 1..n), its account's own keys (AccountKeys.own, nth_account)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[1+i] member "<accountId>/<sessionId>"
-- Returns {removed, skipped because still active}.
-- An account hash left with no session record expires USAGE_DAYS later (its usage).
local now = server_time(ARGV[1])
local removed, skipped = 0, 0
-- the batch's removals from the reap queue in one variadic ZREM at the end (the members are
-- distinct); the accounts that lost a record, checked once each at the end
local dequeued, touched = {}, {}
for i = 1, #ARGV - 1 do
  local mbr = ARGV[1 + i]
  local due = redis.call('ZSCORE', KEYS[2], mbr)
  if due and tonumber(due) <= now then
    local sid = string.sub(mbr, -36)
    local acct = nth_account(string.sub(mbr, 1, -38), i)
    dequeued[#dequeued + 1] = mbr
    -- where the record is: the ENDED hash, or the account hash (an ACTIVE session, or an
    -- ENDED one a version before the split left there)
    local where = acct.ended
    local v = redis.call('HGET', where, sid)
    if not v then
      where = acct.state
      v = redis.call('HGET', where, sid)
    end
    if not v and migrate(acct) == 1 then  -- queued by 0.x: its account moves first
      where = acct.ended
      v = redis.call('HGET', where, sid)
    end
    if v and where == acct.state and active_deadline(v) then
      -- never remove a session that is still active; it is queued again when it ends
      skipped = skipped + 1
    else
      if v then
        redis.call('HDEL', where, sid)
        touched[acct.state] = true
      else  -- a 0.x tombstone or denied record (the account's move does not take those)
        redis.call('DEL', KEYS[5] .. sid)
      end
      removed = removed + 1
    end
  end
end
variadic('ZREM', KEYS[2], dequeued)
for state in pairs(touched) do
  usage_only_expires(state)
end
return {removed, skipped}
