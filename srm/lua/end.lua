-- end: teardown (client or operator) of one session, exactly once however often it is
-- retried or raced. A session whose deadline has already passed ends as TIMEOUT.
--
-- KEYS[1..10] the account's lifecycle keys (AccountKeys.lifecycle):
--   active srm:{sK}:acct:<a>:active zset, count srm:{sK}:acct:<a>:count string,
--   ended srm:{sK}:acct:<a>:ended hash, rules srm:{sK}:acct:<a>:rules hash,
--   deadlines srm:{sK}:deadlines zset, reap srm:{sK}:reap zset,
--   usage srm:{sK}:acct:<a>:usage hash, events srm:{sK}:events stream,
--   sessions srm:{sK}:sess: and denials srm:{sK}:denials: (the shard's prefixes)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] reason  ARGV[5] retention (ms)
-- ARGV[6] events (_events.lua)
-- Returns 1 ended now with ARGV[4], 3 ended now as TIMEOUT (it had lapsed), 2 already ended
-- (not yet removed), 0 no such session for this account.
local now = server_time(ARGV[1])
local sid = ARGV[2]
local acct = account_keys(ARGV[3], 1)
events_config(ARGV[6])
local score = redis.call('ZSCORE', acct.active, sid)
if score then
  if tonumber(score) <= now then
    end_session(acct, sid, 'TIMEOUT', score, now + tonumber(ARGV[5]), nil)
    return 3
  end
  end_session(acct, sid, ARGV[4], now, now + tonumber(ARGV[5]), nil)
  return 1
end
if redis.call('HEXISTS', acct.ended, sid) == 1 then
  return 2
end
return 0
