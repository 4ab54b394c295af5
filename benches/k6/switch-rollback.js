// k6: /hello at a constant rate through a sequence of version changes (by default: v1, then v2
// after a switch, then v1 after a rollback), each window checked on its own.
//
//   benches/k6/run.sh switch-rollback    # starts a demo, runs this, switches and rolls back on time
//
// The driver decides when each change is ordered and tells this script, before it starts, as
// PHASES: the versions in order, each after the first with the wall-clock time (Unix ms, on
// this machine's clock) at which the driver will order the change, e.g.
//   -e PHASES=v1,v2@1764633600000,v1@1764633610000
// Phase k is the window [its time, the next phase's time). The driver orders the change at that
// time (not before), so the proxy cannot serve phase k's version before it; it may serve it later
// (the change takes effect when the proxy has applied it). A request is judged in phase k only if
// it started and ended inside phase k's window (k6 VUs run their requests one after another):
// - phase 0 (before the first change: the steady state): only phase 0's version may answer;
// - phase k >= 1: only the previous version ("old") or phase k's version ("new"); and per VU, once
//   it has received the new version in this window, an old answer is mixing
//   (`mixed_version_responses`, threshold count==0);
// - an old answer that started SETTLE after phase k's time is stale: the change did not take
//   effect in time (`stale_version_responses`);
// - every phase k >= 1 must see its new version (`new_version_responses{phase:k}` count>0) and
//   every window must carry requests (`window_requests{phase:k}` count>0).
// A request straddling a phase time may name any version of the two phases (and their previous
// one); it is counted in `boundary_responses` and takes no part in the per-VU order.
// With ADMIN_URL (e.g. http://127.0.0.1:9901), teardown() reads the proxy's /status swap history:
// after setup() the active version must have changed exactly once per phase, old -> new, inside
// that phase's window (`swap_history_errors` count==0); `switch_delay_ms` is how long after the
// order each change took effect.
//
// Env: as in hello.js (lib.js), plus PHASES (required), SETTLE [3s: a plain number of seconds or
// "Ns"/"Nms"], ADMIN_URL [none]. Exit 99 when a threshold fails.
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { arrival, errorThresholds, get, versions, BASE_URL, PATH, SUMMARY_TREND_STATS, TIMEOUT } from './lib.js';

function parseMs(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(String(s).trim());
  if (!m) throw new Error(`not a duration: ${s}`);
  return m[2] === 'ms' ? parseFloat(m[1]) : parseFloat(m[1]) * 1000;
}

/** PHASES parsed: [{ version, at }], at = -Infinity for phase 0. */
function parsePhases(text) {
  if (!text) throw new Error('PHASES is required, e.g. PHASES=v1,v2@<unix ms>,v1@<unix ms>');
  const out = text.split(',').map((p, i) => {
    const [version, at] = p.trim().split('@');
    if (!version || (i === 0) !== (at === undefined)) {
      throw new Error(`PHASES: "${p}": the first phase is a bare version, every later one version@<unix ms>`);
    }
    return { version, at: i === 0 ? -Infinity : parseInt(at, 10) };
  });
  for (let i = 2; i < out.length; i++) {
    if (!(out[i].at > out[i - 1].at)) throw new Error('PHASES: the times must increase');
  }
  if (out.length < 2) throw new Error('PHASES: at least one change');
  return out;
}

const PHASES = parsePhases(__ENV.PHASES);
const SETTLE_MS = parseMs(__ENV.SETTLE || '3s');
const ADMIN_URL = __ENV.ADMIN_URL || '';

const windowRequests = new Counter('window_requests');
const oldAnswers = new Counter('old_version_responses');
const newAnswers = new Counter('new_version_responses');
const mixed = new Counter('mixed_version_responses');
const stale = new Counter('stale_version_responses');
const unexpected = new Counter('unexpected_version_responses');
const boundary = new Counter('boundary_responses');
const swapErrors = new Counter('swap_history_errors');
const switchDelay = new Trend('switch_delay_ms');

function thresholds() {
  const t = {
    ...errorThresholds(),
    mixed_version_responses: ['count==0'],
    stale_version_responses: ['count==0'],
    unexpected_version_responses: ['count==0'],
    swap_history_errors: ['count==0'],
  };
  for (let k = 0; k < PHASES.length; k++) {
    t[`window_requests{phase:${k}}`] = ['count>0'];
    if (k > 0) {
      t[`new_version_responses{phase:${k}}`] = ['count>0'];
      t[`mixed_version_responses{phase:${k}}`] = ['count==0'];
    }
  }
  return t;
}

export const options = {
  summaryTrendStats: SUMMARY_TREND_STATS,
  scenarios: { phases: arrival() },
  thresholds: thresholds(),
};

/** The phase whose window holds time t (ms). */
function phaseAt(t) {
  let k = 0;
  while (k + 1 < PHASES.length && t >= PHASES[k + 1].at) k++;
  return k;
}

export function setup() {
  const now = Date.now();
  if (now > PHASES[1].at - 1000) {
    fail(`setup: less than 1 s before the first change (k6 started too late: ${PHASES[1].at - now} ms); give the driver a longer lead`);
  }
  const res = http.get(`${BASE_URL}${PATH}`, { timeout: TIMEOUT });
  const v = versions(res.body);
  if (res.status !== 200 || v.length !== 1 || v[0] !== PHASES[0].version) {
    fail(`setup: ${BASE_URL}${PATH} answered ${res.status} naming [${v}], expected ${PHASES[0].version}`);
  }
  return { start: now };
}

// Per VU: the phase in which this VU has received that phase's new version (-1: none yet).
let seenNewIn = -1;

export default function () {
  const t0 = Date.now();
  const res = get(http);
  const t1 = Date.now();
  const v = versions(res.body);
  const one = v.length === 1;
  check(res, {
    'status is 200': (r) => r.status === 200,
    'body names exactly one version': () => one,
  });
  if (res.status !== 200 || !one) return;
  const version = v[0];
  const k0 = phaseAt(t0);
  const k1 = phaseAt(t1);
  if (k0 !== k1) {
    // Straddles a change: any version of those phases (or the one before the first) may answer.
    const allowed = PHASES.slice(Math.max(0, k0 - 1), k1 + 1).map((p) => p.version);
    boundary.add(1, { phase: String(k1) });
    if (!allowed.includes(version)) unexpected.add(1, { phase: String(k1) });
    return;
  }
  const k = k0;
  const tags = { phase: String(k) };
  windowRequests.add(1, tags);
  const next = PHASES[k].version;
  if (k === 0) {
    if (version !== next) unexpected.add(1, tags);
    return;
  }
  const prev = PHASES[k - 1].version;
  if (version === next) {
    newAnswers.add(1, tags);
    seenNewIn = k;
  } else if (version === prev) {
    oldAnswers.add(1, tags);
    if (seenNewIn === k) mixed.add(1, tags);
    if (t0 >= PHASES[k].at + SETTLE_MS) stale.add(1, tags);
  } else {
    unexpected.add(1, tags);
  }
}

export function teardown(data) {
  if (!ADMIN_URL) return;
  const end = Date.now();
  const res = http.get(`${ADMIN_URL}/status`, { timeout: TIMEOUT });
  let swaps;
  try {
    swaps = res.json('swaps');
  } catch (e) {
    swaps = null;
  }
  if (res.status !== 200 || !Array.isArray(swaps)) {
    console.error(`teardown: ${ADMIN_URL}/status answered ${res.status} without a swap history`);
    swapErrors.add(1);
    return;
  }
  // The active version's changes since setup().
  const changes = swaps.filter(
    (s) => s.at >= data.start && s.active && s.active.old_version !== s.active.new_version,
  );
  const want = PHASES.length - 1;
  if (changes.length !== want) {
    console.error(
      `teardown: ${changes.length} active-version changes in /status since setup, expected ${want}: ` +
        JSON.stringify(changes.map((s) => [s.at, s.active.old_version, s.active.new_version])),
    );
    swapErrors.add(1);
  }
  for (let k = 1; k <= Math.min(want, changes.length); k++) {
    const s = changes[k - 1];
    const until = k + 1 < PHASES.length ? PHASES[k + 1].at : end;
    const ok =
      s.active.old_version === PHASES[k - 1].version &&
      s.active.new_version === PHASES[k].version &&
      s.at >= PHASES[k].at &&
      s.at < until;
    if (!ok) {
      console.error(
        `teardown: change ${k} (${s.active.old_version} -> ${s.active.new_version} at ${s.at}) is not ` +
          `${PHASES[k - 1].version} -> ${PHASES[k].version} in [${PHASES[k].at}, ${until})`,
      );
      swapErrors.add(1);
    } else {
      switchDelay.add(s.at - PHASES[k].at, { phase: String(k) });
    }
  }
}
