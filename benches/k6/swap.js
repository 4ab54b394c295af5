// k6: /hello at a constant rate while the active version changes once (flip the tags of your
// instances, or swap `active`/`standby` in the upstreams file, during the run). Passes only if:
// - every request succeeds and every body names exactly one version;
// - the new version was seen (the change happened) and no third version appeared;
// - no mixing: once a VU has received the new version it never receives the old one again
//   (a VU's requests are sequential, so this is a strict order per VU; k6 VUs share no memory,
//   so the order across VUs cannot be checked from here — zerodown's /status history shows the
//   one swap).
//
//   k6 run -e RATE=1000 -e DURATION=60s benches/k6/swap.js
//   (then, e.g. 20 s in: edit config/upstreams.toml to swap the tags, or run your deploy)
//
// Env as in hello.js, plus OLD_VERSION (default: the version /hello answers in setup()) and
// NEW_VERSION (default: any other version). For a switch and then a rollback, with each window
// checked on its own, use switch-rollback.js (benches/k6/run.sh switch-rollback drives it).
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { arrival, errorThresholds, get, versions, BASE_URL, PATH, SUMMARY_TREND_STATS, TIMEOUT } from './lib.js';

const oldAnswers = new Counter('old_version_responses');
const newAnswers = new Counter('new_version_responses');
const mixed = new Counter('mixed_version_responses');
const unexpected = new Counter('unexpected_version_responses');

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: { swap: arrival() },
  thresholds: {
    ...errorThresholds(),
    new_version_responses: ['count>0'],
    mixed_version_responses: ['count==0'],
    unexpected_version_responses: ['count==0'],
  },
};

export function setup() {
  const res = http.get(`${BASE_URL}${PATH}`, { timeout: TIMEOUT });
  const v = versions(res.body);
  if (res.status !== 200 || v.length !== 1) {
    fail(`setup: ${BASE_URL}${PATH} answered ${res.status} naming ${v.length} versions`);
  }
  const old = __ENV.OLD_VERSION || v[0];
  return { old, next: __ENV.NEW_VERSION || null };
}

// Per VU: the new version, once this VU has received it.
let seenNew = null;

export default function (data) {
  const res = get(http);
  const v = versions(res.body);
  const one = v.length === 1;
  check(res, {
    'status is 200': (r) => r.status === 200,
    'body names exactly one version': () => one,
  });
  if (res.status !== 200 || !one) return;
  const version = v[0];
  if (version === data.old) {
    oldAnswers.add(1);
    if (seenNew !== null) mixed.add(1);
  } else if ((data.next !== null && version !== data.next) || (seenNew !== null && version !== seenNew)) {
    unexpected.add(1);
  } else {
    newAnswers.add(1);
    seenNew = version;
  }
}
