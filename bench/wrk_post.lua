-- wrk script for bench/llm.py: POST a fixed body; each thread stops after BENCH_MAX_PER_THREAD responses (the
-- count bound; -d is the time bound); prints one JSON line: latencies in µs, and the real elapsed time.
local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]])
local function now_us()
  local ts = ffi.new("bench_timespec")
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local per_thread = tonumber(os.getenv("BENCH_MAX_PER_THREAD") or "0")
local seen = 0
function init(args)
  wrk.thread:set("started_us", now_us())
end

function response(status, headers, body)
  seen = seen + 1
  if per_thread > 0 and seen == per_thread then
    wrk.thread:set("stopped_us", now_us())
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  -- If every thread hit the count bound, the run ended when the last one stopped, not at -d.
  local elapsed = 0
  for _, t in ipairs(threads) do
    local s, e = t:get("started_us"), t:get("stopped_us")
    if e == nil or s == nil then
      elapsed = summary.duration
      break
    end
    elapsed = math.max(elapsed, e - s)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"elapsed_us":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, elapsed, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
