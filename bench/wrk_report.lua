-- wrk's done() for the bench scripts: one JSON line on stdout, which `hashinsight bench api`
-- reads (latencies in microseconds; errors.status counts responses with a status of 400 or
-- more). The request scripts load it with `done = require("wrk_report")`, so run wrk from this
-- directory.
return function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
