-- wrk script: every connection runs real session lifecycles, one request at a time:
-- setup (POST) -> KEEPALIVES x keep-alive (PUT) -> teardown (DELETE), then the next
-- lifecycle with the next account's Client-Token. Run wrk with as many threads as
-- connections: a wrk thread is then one connection, so each response belongs to the request
-- just sent and teardown always names the session its own setup created.
--
-- usage: wrk -t N -c N -s lifecycle.lua URL -- TOKENS_FILE KEEPALIVES N [xff]
-- TOKENS_FILE holds one Client-Token per line, each for a different account. With "xff",
-- each setup carries X-Forwarded-For: an address of its account's own /24, the token's line
-- number i (from 0) giving 10.<i div 256 mod 256>.<i mod 256>.7 (bench/load.py,
-- forwarded_for), as a load balancer in front of SRM would send it.

local counter = 1
local threads = {}

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local tokens = {}
local keepalives = 1
local step = 0          -- 0: setup next; 1..keepalives: keep-alive; keepalives+1: teardown
local sid = nil
local token = nil
local next_token = 0
local first_token = 0   -- the line (from 0) of this thread's first token
local lines = 1         -- tokens in the file
local forwarded = false
failed = 0  -- globals: done() reads them from every thread
denied = 0
last_failure = ""
local body = '{"content":{"contentID":"100001V3D","contentType":"COD"},"quality":"UHD"}'

function init(args)
  local all = {}
  for line in io.lines(args[1]) do
    all[#all + 1] = line
  end
  keepalives = tonumber(args[2] or "1")
  local threads_count = tonumber(args[3] or "1")
  -- each thread (connection) owns its own slice of the accounts, so no two connections ever
  -- hold sessions of one account at once and no setup is denied at the account limit
  local per = math.max(1, math.floor(#all / threads_count))
  local first = ((id - 1) * per) % #all
  for i = 1, per do
    tokens[i] = all[(first + i - 1) % #all + 1]
  end
  first_token, lines = first, #all
  forwarded = args[4] == "xff"
end

local function pick_token()
  next_token = next_token % #tokens + 1
  return tokens[next_token]
end

function request()
  if step == 0 or sid == nil then
    step = 0
    token = pick_token()
    local headers = {["Client-Token"] = token, ["Content-Type"] = "application/json"}
    if forwarded then
      local line = (first_token + next_token - 1) % lines
      headers["X-Forwarded-For"] = string.format("10.%d.%d.7", math.floor(line / 256) % 256,
        line % 256)
    end
    return wrk.format("POST", "/srm/sessions", headers, body)
  end
  local path = "/srm/sessions/" .. sid
  if step <= keepalives then
    return wrk.format("PUT", path, {["Client-Token"] = token})
  end
  return wrk.format("DELETE", path, {["Client-Token"] = token})
end

function response(status, headers, resp)
  if status ~= 200 then
    failed = failed + 1
    last_failure = status .. " " .. (resp or "")
    step, sid = 0, nil
    return
  end
  if step == 0 then
    sid = string.match(resp, '"sessionId":"([0-9a-f%-]+)"')
    if sid == nil then
      denied = denied + 1  -- SRM-0005: more lifecycles than the limit on one account at once
      return
    end
    step = 1
  elseif step <= keepalives then
    step = step + 1
  else
    step, sid = 0, nil
  end
end

function done(summary, latency, requests)
  local failures, denials, example = 0, 0, ""
  for _, t in ipairs(threads) do
    failures = failures + (t:get("failed") or 0)
    denials = denials + (t:get("denied") or 0)
    if (t:get("last_failure") or "") ~= "" then
      example = t:get("last_failure")
    end
  end
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "errors": %d, "failed": %d, "denied": %d, "example": "%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout, failures, denials,
    string.gsub(string.sub(example, 1, 200), '["\\]', "'")))
end
