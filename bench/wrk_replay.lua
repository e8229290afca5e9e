-- Replays prepared requests through wrk, each exactly once, then stops.
--
-- Usage: wrk -t T -c C -d 600s -s bench/wrk_replay.lua URL -- FILE T RECORDS OK_STATUSES [EXPECT_FIELD]
--
-- FILE holds one request per line: method, path, content type and body,
-- separated by tabs; newlines inside a body are written as \30 (the ASCII
-- record separator). Each request carries RECORDS job records. Thread k of T
-- sends lines k+1, k+1+T, ... . Once a thread's lines are all sent, its
-- connections that still ask for work send GET /wrk-replay-filler, which
-- answers 404 and is not counted, until the thread's last answer is in; then
-- the thread stops. OK_STATUSES is a comma-separated list of HTTP statuses that
-- count as success; EXPECT_FIELD (optional) names a JSON field of the answer
-- that must equal RECORDS (e.g. accepted).
--
-- done() prints one line that the benchmark parses:
--   RESULT sent=N ok=N failed=N records=N seconds=S p50_ms=X p99_ms=Y
-- where seconds run from the first request sent to the last answer in.
-- and, when something failed, FAILURE <first failure>.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } replay_timespec;
int clock_gettime(int clock_id, replay_timespec *tp);
]])
local timespec = ffi.new("replay_timespec")

-- CLOCK_MONOTONIC seconds: wrk's own duration is the whole -d window.
local function now()
  ffi.C.clock_gettime(1, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local threads = {}
local created = 0

function setup(thread)
  thread:set("index", created)
  created = created + 1
  table.insert(threads, thread)
end

function init(args)
  local path, total = args[1], tonumber(args[2])
  per_request = tonumber(args[3])
  expect_field = args[5]
  ok_status = {}
  for s in string.gmatch(args[4], "%d+") do
    ok_status[tonumber(s)] = true
  end
  items = {}
  local n = 0
  for line in io.lines(path) do
    if n % total == index then
      local method, target, ctype, body = line:match("^(%u+)\t([^\t]+)\t([^\t]+)\t(.*)$")
      body = body:gsub("\30", "\n")
      table.insert(items, wrk.format(method, target, { ["Content-Type"] = ctype }, body))
    end
    n = n + 1
  end
  filler = wrk.format("GET", "/wrk-replay-filler")
  next_item, answered, ok, failed, records, fillers = 1, 0, 0, 0, 0, 0
  started, finished = 0, 0
  first_failure = ""
  -- wrk calls request() once in thread 0 before it starts, only to check what
  -- it returns; that call must not use up a line.
  checked = index ~= 0
end

function request()
  if not checked then
    checked = true
    return filler
  end
  if next_item > #items then
    fillers = fillers + 1
    return filler
  end
  if next_item == 1 then
    started = now()
  end
  next_item = next_item + 1
  return items[next_item - 1]
end

function response(status, headers, body)
  if status == 404 and fillers > 0 then
    fillers = fillers - 1
  else
    answered = answered + 1
    local good = ok_status[status] == true
    if good and expect_field then
      good = body:find('"' .. expect_field .. '":' .. per_request .. "[,}]") ~= nil
    end
    if good then
      ok = ok + 1
      records = records + per_request
    else
      failed = failed + 1
      if first_failure == "" then
        first_failure = "HTTP " .. status .. ": " .. body:sub(1, 200):gsub("%s+", " ")
      end
    end
  end
  if answered >= #items and finished == 0 then
    finished = now()
    io.write("THREAD_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local sent, oks, fails, recs, failure = 0, 0, 0, 0, ""
  local first, last = math.huge, 0
  for _, thread in ipairs(threads) do
    first = math.min(first, thread:get("started"))
    last = math.max(last, thread:get("finished"))
    sent = sent + thread:get("answered")
    oks = oks + thread:get("ok")
    fails = fails + thread:get("failed")
    recs = recs + thread:get("records")
    if failure == "" then
      failure = thread:get("first_failure")
    end
  end
  io.write(
    string.format(
      "RESULT sent=%d ok=%d failed=%d records=%d seconds=%.6f p50_ms=%.3f p99_ms=%.3f\n",
      sent,
      oks,
      fails,
      recs,
      last > first and last - first or summary.duration / 1e6,
      latency:percentile(50) / 1000,
      latency:percentile(99) / 1000
    )
  )
  if failure ~= "" then
    io.write("FAILURE " .. failure .. "\n")
  end
end
