// What every zerodown k6 script shares: the env, the open-model scenario, the summary's trend
// statistics (p99 included), the request deadline, and the count of failures by class.
//
// Env: BASE_URL [http://127.0.0.1:8080], PATH_ [/hello], RATE [1000] req/s, DURATION [60s],
// VUS [RATE/10, at least 50] pre-allocated VUs, MAX_VUS [4 x VUS], TIMEOUT [5s] per request.
import { Counter } from 'k6/metrics';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const PATH = __ENV.PATH_ || '/hello';
export const RATE = parseInt(__ENV.RATE || '1000', 10);
export const DURATION = __ENV.DURATION || '60s';
export const VUS = parseInt(__ENV.VUS || String(Math.max(50, Math.ceil(RATE / 10))), 10);
export const MAX_VUS = parseInt(__ENV.MAX_VUS || String(VUS * 4), 10);
// Every request has a deadline; a request that misses it is a failure (class "timeout").
export const TIMEOUT = __ENV.TIMEOUT || '5s';

// Printed for every trend in the end-of-test summary (and in --summary-export).
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

/** A constant-arrival-rate scenario (open model: the offered load does not wait for answers). */
export function arrival(rate = RATE, vus = VUS, maxVus = MAX_VUS) {
  return {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: vus,
    maxVUs: maxVus,
  };
}

// Failed requests by class. k6 error codes: https://grafana.com/docs/k6/latest/javascript-api/error-codes/
export const FAILURE_CLASSES = ['timeout', 'refused', 'reset', 'closed', 'status_4xx', 'status_5xx', 'other'];
const failures = new Counter('failed_requests');

/**
 * The thresholds every script carries: no failed request (each class shown on its own line), every
 * check passed, and no dropped iteration (k6 drops one when it has no free VU: the offered load
 * was then less than asked).
 */
export function errorThresholds() {
  const t = {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    dropped_iterations: ['count==0'],
  };
  for (const c of FAILURE_CLASSES) t[`failed_requests{class:${c}}`] = ['count==0'];
  return t;
}

/** The failure class of a response, or null when it is a 2xx/3xx answer. */
export function failureClass(res) {
  const code = res.error_code || 0;
  if (code === 0 && res.status >= 200 && res.status < 400) return null;
  if (code === 1050 || code === 1211) return 'timeout';
  if (code === 1212) return 'refused';
  if (code === 1220 || code === 1201) return 'reset';
  if (res.status >= 500) return 'status_5xx';
  if (res.status >= 400) return 'status_4xx';
  if (/EOF|closed/i.test(res.error || '')) return 'closed';
  return 'other';
}

/** GET BASE_URL+PATH with the deadline; counts a failure by class. */
export function get(http) {
  const res = http.get(`${BASE_URL}${PATH}`, { tags: { name: 'hello' }, timeout: TIMEOUT });
  const cls = failureClass(res);
  if (cls !== null) failures.add(1, { class: cls });
  return res;
}

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
