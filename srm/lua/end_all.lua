-- end_all: end up to ARGV[4] ACTIVE sessions of one account (operator), lapsed ones as
-- TIMEOUT at their deadline, oldest keep-alive first.
--
-- KEYS[1..11] the account's lifecycle keys (AccountKeys.lifecycle, _account.lua)
-- KEYS[12] marker  srm:{sK}:endall:<callId>  string: ended with ARGV[3] by this call so far
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] reason  ARGV[4] batch  ARGV[5] retention (ms)
-- ARGV[6] lifetime of the marker (ms)  ARGV[7] events (_events.lua)
-- Returns {ended with ARGV[3], ended as TIMEOUT, sessions still active, ended with ARGV[3] by
-- every batch of this call (a batch run twice counts once)}.
local now = server_time(ARGV[1])
local acct = account_keys(ARGV[2], 1)
events_config(ARGV[7])
local legacy = legacy_first(acct)
if legacy then
  return legacy
end
local purge_at = now + tonumber(ARGV[5])
local batch = tonumber(ARGV[4])
local records, all = active_records(acct)
local n, lapsed, queued = 0, 0, {}
for i = 1, math.min(batch, #records) do
  local sid, deadline = records[i][1], records[i][2]
  local _, as_asked = end_now(acct, sid, all[sid], deadline, ARGV[3], now, purge_at, queued)
  if as_asked then
    n = n + 1
  else
    lapsed = lapsed + 1
  end
end
variadic('ZADD', acct.reap, queued)
local first = records[n + lapsed + 1]  -- the earliest deadline left
due_at(acct, first and first[2])
local total = count_call(KEYS[LIFECYCLE + 1], n, tonumber(ARGV[6]))
return {n, lapsed, #records - n - lapsed, total}
