-- wrk script: cycles through the request paths of a file (one per line),
-- each thread from its own offset, and prints the results as one JSON line.
-- usage: wrk ... -s wrk-paths.lua <url> -- <paths-file>

local requests = {}
local next_request = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    requests[#requests + 1] = wrk.format("GET", line)
  end
  file:close()
  next_request = math.random(#requests) - 1
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeouts":%d,"non_2xx":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.timeout, errors.status, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
