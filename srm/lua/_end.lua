-- Shared fragment, prepended to every script that ends sessions (the loader does this).
--
-- end_session: the one ACTIVE -> ENDED transition. It happens only where ZREM from the
-- account's active set returns 1, so however many callers race, exactly one decrements the
-- counter, records the end and queues the session for removal; the others get 0.
--   active, count, ended: the account's keys; deadlines, reap: the shard's keys
--   sid: sessionId; mbr: "<accountId>/<sessionId>"; reason: TEARDOWN|TIMEOUT|OPERATOR|EVICTED
--   ended_at: ms; purge_at: ms when the reaper may remove it
--   ev: the account's event context (_events.lua): its session.ended event and usage
local function end_session(active, count, ended, deadlines, reap, sid, mbr, reason, ended_at, purge_at, ev)
  if redis.call('ZREM', active, sid) == 0 then
    return 0
  end
  local left = redis.call('DECR', count)
  if left <= 0 then
    redis.call('DEL', count)
  end
  session_ended(ev, sid, reason, ended_at, left + 1)
  redis.call('HSET', ended, sid, reason .. '|' .. ended_at)
  redis.call('ZREM', deadlines, mbr)
  redis.call('ZADD', reap, purge_at, mbr)
  return 1
end

-- end_lapsed: ends up to `max` sessions of one account whose deadline is <= now, each with
-- endReason TIMEOUT at its own deadline. Returns how many it ended.
local function end_lapsed(active, count, ended, deadlines, reap, account, now, purge_at, max, ev)
  local lapsed = redis.call('ZRANGEBYSCORE', active, '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
  local n = 0
  for i = 1, #lapsed, 2 do
    local sid = lapsed[i]
    n = n + end_session(active, count, ended, deadlines, reap, sid, account .. '/' .. sid,
      'TIMEOUT', lapsed[i + 1], purge_at, ev)
  end
  return n
end
