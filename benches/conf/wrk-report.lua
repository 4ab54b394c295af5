-- Prints one machine-readable line at the end of a wrk run (latencies in microseconds):
-- WRK <requests> <duration_us> <errors> <non2xx> <p50> <p90> <p99> <max>
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
