// k6: constant arrival rate against /hello through zerodown; every request must succeed and every
// body must name exactly one version.
//
//   k6 run benches/k6/hello.js                              # 1,000 req/s for 60 s
//   k6 run -e RATE=10000 benches/k6/hello.js                # 10,000 req/s
//   k6 run -e BASE_URL=http://host:8080 -e DURATION=5m benches/k6/hello.js
//
// Env: BASE_URL [http://127.0.0.1:8080], PATH_ [/hello], RATE [1000] req/s, DURATION [60s],
// VUS [RATE/10, at least 50] pre-allocated VUs, MAX_VUS [4 x VUS].
// Fails (exit 99) if any request fails (`http_req_failed: rate==0`) or any check fails.
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const PATH = __ENV.PATH_ || '/hello';
const RATE = parseInt(__ENV.RATE || '1000', 10);
const DURATION = __ENV.DURATION || '60s';
const VUS = parseInt(__ENV.VUS || String(Math.max(50, Math.ceil(RATE / 10))), 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || String(VUS * 4), 10);

export const options = {
  discardResponseBodies: false,
  scenarios: {
    hello: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    // k6 drops iterations when it runs out of VUs: the offered load was then not what was asked.
    dropped_iterations: ['count==0'],
  },
};

const VERSION = /\(version ([^)\s]+)\)/g;

/** The versions a body names (the demo backends answer "... (version v1)"). */
export function versions(body) {
  const out = [];
  if (typeof body !== 'string') return out;
  let m;
  VERSION.lastIndex = 0;
  while ((m = VERSION.exec(body)) !== null) out.push(m[1]);
  return out;
}

export default function () {
  const res = http.get(`${BASE_URL}${PATH}`, { tags: { name: 'hello' } });
  const v = versions(res.body);
  const header = res.headers['X-Version'];
  check(res, {
    'status is 200': (r) => r.status === 200,
    'body names exactly one version': () => v.length === 1,
    'X-Version header agrees with the body': () => header === undefined || (v.length === 1 && header === v[0]),
  });
}
