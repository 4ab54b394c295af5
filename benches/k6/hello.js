// k6: constant arrival rate against /hello through zerodown; every request must succeed within its
// deadline and every body must name exactly one version.
//
//   benches/k6/run.sh 1k                                    # the driver: demo + k6 + summary
//   k6 run benches/k6/hello.js                              # 1,000 req/s for 60 s, against :8080
//   k6 run -e RATE=10000 benches/k6/hello.js                # 10,000 req/s
//   k6 run -e BASE_URL=http://host:8080 -e DURATION=5m benches/k6/hello.js
//
// Env (lib.js): BASE_URL [http://127.0.0.1:8080], PATH_ [/hello], RATE [1000] req/s, DURATION
// [60s], VUS [RATE/10, at least 50] pre-allocated VUs, MAX_VUS [4 x VUS], TIMEOUT [5s].
// The summary shows p50/p90/p95/p99 and the failures by class (timeout, refused, reset, closed,
// 4xx, 5xx, other). Fails (exit 99) if any request fails, any check fails or k6 drops an iteration.
import http from 'k6/http';
import { check } from 'k6';
import { arrival, errorThresholds, get, versions, SUMMARY_TREND_STATS } from './lib.js';

export { versions };

export const options = {
  discardResponseBodies: false,
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: { hello: arrival() },
  thresholds: errorThresholds(),
};

export default function () {
  const res = get(http);
  const v = versions(res.body);
  const header = res.headers['X-Version'];
  check(res, {
    'status is 200': (r) => r.status === 200,
    'body names exactly one version': () => v.length === 1,
    'X-Version header agrees with the body': () => header === undefined || (v.length === 1 && header === v[0]),
  });
}
