-- end: teardown (client or operator) of one session, exactly once however often it is
-- retried or raced. A session whose deadline has already passed ends as TIMEOUT.
--
-- KEYS[1..11] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] sessionId  ARGV[3] accountId  ARGV[4] reason  ARGV[5] retention (ms)
-- ARGV[6] events (_events.lua)
-- Returns 1 ended now with ARGV[4], 3 ended now as TIMEOUT (it had lapsed), 2 already ended
-- (not yet removed), 0 no such session for this account.
local now = server_time(ARGV[1])
local sid = ARGV[2]
local acct = account_keys(ARGV[3], 1)
events_config(ARGV[6])
local v = find_record(acct, sid)
if not v then
  -- unknown here: the session may still be in 0.x keys (a moved account has none left)
  return legacy_first(acct) or 0
end
local _, _, deadline, _, reason = record_times(v)
if not deadline then
  return 0
end
if reason then
  return 2
end
local left, as_asked = end_now(acct, sid, v, deadline, ARGV[4], now, now + tonumber(ARGV[5]))
deadline_left(acct, deadline, nil, left)
return as_asked and 1 or 3
