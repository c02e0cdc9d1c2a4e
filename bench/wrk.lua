-- wrk script for bench/run.py (wrk 4.x, LuaJIT).
--
--   wrk ... -s bench/wrk.lua URL -- <method> <mode> <body> <nonce> <expect>
--
--   method  GET | POST
--   mode    static  every request sends <body> unchanged
--           unique  "{n}" in <body> becomes "<nonce>-<thread>-<counter>", so every request
--                   of every thread (and of every run, given a fresh nonce) differs
--   body    request body ("-" for none)
--   nonce   any token without spaces
--   expect  the status class counted as success: 2xx (default) or an exact status (422)
--
-- Request headers come from wrk's -H flags. At the end it prints one line
--   BENCH_JSON {...}
-- with wrk's own counters (requests, duration, socket errors, latency percentiles in µs)
-- and what response() counted across all threads: status classes, responses other than
-- <expect>, and x-cache HIT / MISS headers.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local method, mode, body, nonce, expect
local counter = 0
local static_request
-- Per-thread counters (read back in done() through thread:get).
ok, unexpected, s2xx, s3xx, s4xx, s5xx, hits, misses = 0, 0, 0, 0, 0, 0, 0, 0

function init(args)
  method = args[1] or "POST"
  mode = args[2] or "static"
  body = args[3] or "-"
  nonce = args[4] or "0"
  expect = args[5] or "2xx"
  if body == "-" then body = nil end
  if mode == "static" then
    static_request = wrk.format(method, nil, nil, body)
  end
end

function request()
  if mode == "unique" then
    counter = counter + 1
    local id = nonce .. "-" .. tostring(tid) .. "-" .. tostring(counter)
    local b = string.gsub(body, "{n}", id)
    return wrk.format(method, nil, nil, b)
  end
  return static_request
end

function response(status, headers, _)
  if status >= 200 and status < 300 then
    s2xx = s2xx + 1
  elseif status < 400 then
    s3xx = s3xx + 1
  elseif status < 500 then
    s4xx = s4xx + 1
  else
    s5xx = s5xx + 1
  end
  local good
  if expect == "2xx" then
    good = status >= 200 and status < 300
  else
    good = tostring(status) == expect
  end
  if good then ok = ok + 1 else unexpected = unexpected + 1 end
  local cache = headers["x-cache"] or headers["X-Cache"]
  if cache == "HIT" then hits = hits + 1 elseif cache == "MISS" then misses = misses + 1 end
end

local function sum(name)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + (tonumber(t:get(name)) or 0)
  end
  return total
end

function done(summary, latency, _)
  local e = summary.errors
  local parts = {
    string.format('"requests": %d', summary.requests),
    string.format('"duration_us": %d', summary.duration),
    string.format('"bytes": %d', summary.bytes),
    string.format('"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, "p50": %d, "p75": %d, "p90": %d, "p99": %d, "p999": %d}',
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)),
    string.format('"responses": {"ok": %d, "unexpected": %d, "2xx": %d, "3xx": %d, "4xx": %d, "5xx": %d, "cache_hit": %d, "cache_miss": %d}',
      sum("ok"), sum("unexpected"), sum("s2xx"), sum("s3xx"), sum("s4xx"), sum("s5xx"), sum("hits"), sum("misses")),
  }
  io.write("BENCH_JSON {" .. table.concat(parts, ", ") .. "}\n")
end
