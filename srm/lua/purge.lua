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
-- Per batch: one ZRANGEBYSCORE finds which members are due (reading their scores, ZMSCORE,
-- costs more: each is formatted as a double and parsed back), one variadic ZREM dequeues
-- them; per account: one HMGET finds its records in its ENDED hash, one HDEL removes them.
local now = server_time(ARGV[1])
local count = #ARGV - 1
local removed, skipped = 0, 0
-- the members due now, as many as the caller passed: the caller's are among them unless
-- another reaper dequeued them (or earlier ones came), then they wait for the next batch
local due = {}
local found = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', digits(now), 'LIMIT', 0, count)
for _, mbr in ipairs(found) do
  due[mbr] = true
end
-- the due members by account, in the order met: {account, its sessionIds}
local dequeued, accounts, by_id = {}, {}, {}
for i = 1, count do
  local mbr = ARGV[1 + i]
  if due[mbr] then
    due[mbr] = nil  -- once, were it passed twice
    dequeued[#dequeued + 1] = mbr
    local id = string.sub(mbr, 1, -38)
    local group = by_id[id]
    if not group then
      group = {nth_account(id, i), {}}
      by_id[id] = group
      accounts[#accounts + 1] = group
    end
    group[2][#group[2] + 1] = string.sub(mbr, -36)
  end
end
for _, group in ipairs(accounts) do
  local acct, sids = group[1], group[2]
  local found, gone, touched = variadic_reply('HMGET', acct.ended, sids, 1, #sids), {}, false
  for j = 1, #sids do
    local sid = sids[j]
    if found[j] then
      gone[#gone + 1] = sid
    else
      -- not in the ENDED hash: an ACTIVE session, an ENDED one a version before the split
      -- left in the account hash, or one queued by 0.x (whose account moves first)
      local where = acct.state
      local v = redis.call('HGET', where, sid)
      if not v and migrate(acct) == 1 then
        where = acct.ended
        v = redis.call('HGET', where, sid)
      elseif not v then
        where = acct.ended  -- moved by this batch's migrate of another member
        v = redis.call('HGET', where, sid)
      end
      if v and where == acct.state and active_deadline(v) then
        -- never remove a session that is still active; it is queued again when it ends
        skipped = skipped + 1
      elseif v then
        redis.call('HDEL', where, sid)
        touched = true
        removed = removed + 1
      else  -- a 0.x tombstone or denied record (the account's move does not take those)
        redis.call('DEL', KEYS[5] .. sid)
        removed = removed + 1
      end
    end
  end
  if #gone > 0 then
    variadic('HDEL', acct.ended, gone)
    removed = removed + #gone
    touched = true
  end
  if touched then
    usage_only_expires(acct.state, true)
  end
end
variadic('ZREM', KEYS[2], dequeued)
return {removed, skipped}
