-- end_device: end up to ARGV[6] ACTIVE sessions of one device of an account (operator); a
-- lapsed one ends as TIMEOUT at its deadline.
--
-- KEYS[1..11] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- KEYS[12] marker  srm:{sK}:endall:<callId>  string: ended with ARGV[4] by this call so far
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] deviceId  ARGV[4] reason  ARGV[5] retention (ms)
-- ARGV[6] batch  ARGV[7] lifetime of the marker (ms)  ARGV[8] events (_events.lua)
-- Returns {1 if more of the device's sessions are left, else 0, ended with ARGV[4] by every
-- call with this marker}. A call run twice (its reply lost, then resent) finds the sessions
-- of its first run ended and the marker counting them.
local now = server_time(ARGV[1])
local acct = account_keys(ARGV[2], 1)
events_config(ARGV[8])
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
local purge_at = now + tonumber(ARGV[5])
local n, more = end_device_sessions(acct, ARGV[3], ARGV[4], now, purge_at, tonumber(ARGV[6]))
return {more, count_call(KEYS[LIFECYCLE + 1], n, tonumber(ARGV[7]))}
