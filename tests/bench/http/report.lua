-- report.lua — wrk script of tests/bench/http/run_http.sh: after the run, one JSON line
-- "HTTPBENCH {...}" with the request count, duration, requests/s, latency percentiles
-- (microseconds, over every request: wrk's --latency distribution) and every error
-- count (socket errors and non-2xx/3xx answers), so the script needs no parsing of
-- wrk's human-readable table.
done = function(summary, latency, requests)
    local s = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        'HTTPBENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,' ..
        '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},"bytes":%d}\n',
        summary.requests, s, summary.requests / s,
        latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.max, e.connect, e.read, e.write, e.timeout, e.status, summary.bytes))
end
