-- end_all: end up to ARGV[4] ACTIVE sessions of one account (operator), lapsed ones as TIMEOUT.
--
-- KEYS[1..10] the account's lifecycle keys (AccountKeys.lifecycle, see end.lua)
-- KEYS[11] marker  srm:{sK}:endall:<callId>  string: ended with ARGV[3] by this call so far
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] reason  ARGV[4] batch  ARGV[5] retention (ms)
-- ARGV[6] lifetime of the marker (ms)  ARGV[7] events (_events.lua)
-- Returns {ended with ARGV[3], ended as TIMEOUT, sessions still active, ended with ARGV[3] by
-- every batch of this call (a batch run twice counts once)}.
local now = server_time(ARGV[1])
local acct = account_keys(ARGV[2], 1)
events_config(ARGV[7])
local purge_at = now + tonumber(ARGV[5])
local lapsed = end_lapsed(acct, now, purge_at, tonumber(ARGV[4]))
local ids = redis.call('ZRANGE', acct.active, 0, tonumber(ARGV[4]) - 1)
local n = 0
for _, sid in ipairs(ids) do
  n = n + end_session(acct, sid, ARGV[3], now, purge_at, nil)
end
local total = redis.call('INCRBY', KEYS[11], n)
redis.call('PEXPIRE', KEYS[11], tonumber(ARGV[6]))
return {n, lapsed, redis.call('ZCARD', acct.active), total}
