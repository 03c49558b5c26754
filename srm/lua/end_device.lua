-- end_device: end the ACTIVE sessions of one device of an account (operator), one bounded
-- window of the account's active set per call; a lapsed one ends as TIMEOUT at its deadline.
--
-- KEYS[1..10] the account's lifecycle keys (AccountKeys.lifecycle, see end.lua)
-- KEYS[11] marker  srm:{sK}:endall:<callId>  string: ended with ARGV[4] by this call so far
-- ARGV[1] clock override (ms, tests only; empty: the server's TIME)
-- ARGV[2] accountId  ARGV[3] deviceId  ARGV[4] reason  ARGV[5] retention (ms)
-- ARGV[6] window start: the other devices' sessions this call has passed (ZRANGE rank)
-- ARGV[7] window size  ARGV[8] lifetime of the marker (ms)  ARGV[9] events (_events.lua)
-- Returns {other devices' sessions in the window, sessions in the window, ended with ARGV[4]
-- by every window of this call}. The device's sessions leave the active set as they end, so
-- the next window starts after the other devices' ones: a window run twice (its reply lost,
-- then resent) finds its sessions already ended and the marker already counting them.
local now = server_time(ARGV[1])
local acct = account_keys(ARGV[2], 1)
events_config(ARGV[9])
local purge_at = now + tonumber(ARGV[5])
local start = tonumber(ARGV[6])
local window = redis.call('ZRANGE', acct.active, start, start + tonumber(ARGV[7]) - 1,
  'WITHSCORES')
local others, n = 0, 0
for i = 1, #window, 2 do
  local sid, deadline = window[i], window[i + 1]
  if redis.call('HGET', acct.sessions .. sid, 'dev') == ARGV[3] then
    if tonumber(deadline) <= now then
      end_session(acct, sid, 'TIMEOUT', deadline, purge_at, nil)
    else
      n = n + end_session(acct, sid, ARGV[4], now, purge_at, nil)
    end
  else
    others = others + 1
  end
end
local total = redis.call('INCRBY', KEYS[11], n)
redis.call('PEXPIRE', KEYS[11], tonumber(ARGV[8]))
return {others, #window / 2, total}
