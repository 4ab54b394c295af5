#!/usr/bin/env python3
"""HSMS equipment sessions driven by secsgem (an HSMS/GEM implementation not written here).

Opens --sessions equipment sessions in ACTIVE connect mode to --address/--port, waits (bounded)
until each is CONNECTED_SELECTED, then every session sends S1F1 (W-bit) in a loop for --seconds
with secsgem's own send_and_waitfor_response and T3 (--t3), and records the version each S1F2
names (its second item, SOFTREV). Lines on stdin are flip instants (milliseconds since --t0):
for each one the script reports which sessions had an S1F1 open at that instant.

Prints ONE JSON object on stdout at the end; exits 0 even when it saw errors (the caller judges),
2 when secsgem is not installed. Times are milliseconds since --t0 (a Unix time in seconds,
shared with the caller), from time.time().

Classes counted: replies; t3_timeouts (no reply within T3 while selected); send_failures (the
send failed or returned at once without a reply); hung (a call still not returned at the end);
bad_replies (not an S1F2, or no version in it); disconnects; left_selected (the HSMS state left
CONNECTED_SELECTED); deselect/separate/reject received (any control message the peer sent is
counted by type); undecodable data messages (secsgem could not decode them and drops them);
exceptions.
"""

import argparse
import json
import os
import sys
import threading
import time

try:
    import secsgem.common
    import secsgem.gem
    import secsgem.hsms
    import secsgem.secs
    from secsgem.hsms.connection_state_machine import ConnectionState
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"equipment.py: secsgem is not installed ({exc}); run: pip install secsgem", file=sys.stderr)
    sys.exit(2)


def ms(t0, t):
    return round((t - t0) * 1000.0, 1)


class Session:
    """One secsgem equipment session and what it saw."""

    def __init__(self, index, args):
        self.index = index
        self.args = args
        self.lock = threading.Lock()
        self.counting = True
        self.selected = threading.Event()
        self.counts = {
            "replies": 0,
            "t3_timeouts": 0,
            "send_failures": 0,
            "bad_replies": 0,
            "disconnects": 0,
            "left_selected": 0,
            "exceptions": 0,
        }
        self.control = {}  # control messages received, by secsgem's name for the SType
        self.undecodable = {}  # "SxFy" -> count
        self.errors = []  # the first few, as text
        self.records = []  # (t_send, t_recv, version or None), seconds since the epoch
        self.in_call_since = None  # t_send of a call that has not returned

        settings = secsgem.hsms.HsmsSettings(
            address=args.address,
            port=args.port,
            connect_mode=secsgem.hsms.HsmsConnectMode.ACTIVE,
            device_type=secsgem.common.DeviceType.EQUIPMENT,
            t3=args.t3,
            t5=1.0,
            t6=5.0,
        )
        self.handler = secsgem.gem.GemEquipmentHandler(settings)
        proto = self.handler.protocol
        state = proto.connection_state
        state.connected_selected.events.enter.register(lambda _: self.selected.set())
        state.connected_selected.events.leave.register(lambda _: self._count("left_selected", "left CONNECTED_SELECTED"))
        proto.events.disconnected += lambda _: self._count("disconnects", "disconnected")

        # Every message secsgem receives goes through this method (its dispatcher looks it up on the
        # instance): count control messages by type, and data messages it cannot decode (secsgem
        # logs and drops those).
        original = proto._on_connection_message_received

        def observe(source, message):
            header = message.header
            if header.s_type.value > 0:
                with self.lock:
                    if self.counting:
                        name = header.s_type.text
                        self.control[name] = self.control.get(name, 0) + 1
            try:
                original(source, message)
            except Exception as exc:  # noqa: BLE001 - counted, not hidden
                key = f"S{header.stream}F{header.function}"
                with self.lock:
                    if self.counting:
                        self.undecodable[key] = self.undecodable.get(key, 0) + 1
                        self._note(f"undecodable {key}: {exc!r}")

        proto._on_connection_message_received = observe

    def _note(self, text):
        if len(self.errors) < 5:
            self.errors.append(text)

    def _count(self, key, text):
        with self.lock:
            if self.counting:
                self.counts[key] += 1
                self._note(text)

    def stop_counting(self):
        with self.lock:
            self.counting = False

    def run(self, end):
        s1f1 = secsgem.secs.functions.SecsS01F01
        while time.time() < end:
            t_send = time.time()
            self.in_call_since = t_send
            try:
                reply = self.handler.send_and_waitfor_response(s1f1())
            except Exception as exc:  # noqa: BLE001 - counted
                self.in_call_since = None
                self._count("exceptions", f"exception: {exc!r}")
                time.sleep(0.05)
                continue
            t_recv = time.time()
            self.in_call_since = None
            if reply is None:
                # secsgem returns None both when T3 expired and when the send failed.
                if t_recv - t_send >= self.args.t3 * 0.9:
                    self._count("t3_timeouts", f"T3 timeout for S1F1 sent at {ms(self.args.t0, t_send)} ms")
                    self.records.append((t_send, t_recv, None))
                else:
                    self._count("send_failures", f"send failed at {ms(self.args.t0, t_send)} ms")
                    time.sleep(0.05)
                continue
            header = reply.header
            version = None
            if header.s_type.value == 0 and (header.stream, header.function) == (1, 2):
                try:
                    items = self.handler.settings.streams_functions.decode(reply).get()
                    version = items[1] if len(items) == 2 else None
                except Exception as exc:  # noqa: BLE001 - counted as a bad reply below
                    self._note(f"S1F2 decode: {exc!r}")
            if version is None:
                # A Reject.req with our system bytes also lands here (and is counted by type above).
                self._count("bad_replies", f"bad reply {header} at {ms(self.args.t0, t_recv)} ms")
                continue
            with self.lock:
                self.counts["replies"] += 1
            self.records.append((t_send, t_recv, version))

    def report(self, flips, now):
        t0 = self.args.t0
        records = list(self.records)
        # Runs of one version, in order: [version, count, first reply ms, last reply ms]. A session
        # has one S1F1 open at a time, so reply order is request order.
        runs = []
        for _, t_recv, version in records:
            if version is None:
                continue
            if runs and runs[-1][0] == version:
                runs[-1][1] += 1
                runs[-1][3] = ms(t0, t_recv)
            else:
                runs.append([version, 1, ms(t0, t_recv), ms(t0, t_recv)])
        intervals = [(ms(t0, a), ms(t0, b)) for a, b, _ in records]
        if self.in_call_since is not None:
            intervals.append((ms(t0, self.in_call_since), ms(t0, now)))
        inflight = [any(a <= f < b for a, b in intervals) for f in flips]
        busy = sum(b - a for a, b in intervals)
        span = (intervals[-1][1] - intervals[0][0]) if intervals else 0.0
        return {
            "counts": dict(self.counts),
            "hung": self.in_call_since is not None,
            "control_received": dict(self.control),
            "undecodable": dict(self.undecodable),
            "errors": list(self.errors),
            "runs": runs,
            "inflight_at_flips": inflight,
            "busy_fraction": round(busy / span, 3) if span > 0 else 0.0,
        }


def read_flips(flips, lock):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            value = float(line)
        except ValueError:
            continue
        with lock:
            flips.append(value)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--t3", type=float, default=5.0, help="secsgem's reply timeout (s)")
    p.add_argument("--select-wait", type=float, default=10.0, help="bound on reaching SELECTED (s)")
    p.add_argument("--t0", type=float, default=None, help="common clock origin, Unix seconds")
    args = p.parse_args()
    if args.t0 is None:
        args.t0 = time.time()

    flips, flips_lock = [], threading.Lock()
    threading.Thread(target=read_flips, args=(flips, flips_lock), daemon=True).start()

    sessions = [Session(i, args) for i in range(args.sessions)]
    for s in sessions:
        s.handler.enable()
    deadline = time.time() + args.select_wait
    not_selected = 0
    for s in sessions:
        if not s.selected.wait(max(0.0, deadline - time.time())):
            not_selected += 1
        elif s.handler.protocol.connection_state.current != ConnectionState.CONNECTED_SELECTED:
            not_selected += 1
    t_start = time.time()

    if not_selected == 0:
        end = t_start + args.seconds
        workers = [threading.Thread(target=s.run, args=(end,), daemon=True) for s in sessions]
        for w in workers:
            w.start()
        # A call returns within T3 unless secsgem hangs; a worker not done by then is reported hung.
        bound = end + args.t3 + 2.0
        for w in workers:
            w.join(max(0.0, bound - time.time()))
    t_end = time.time()
    for s in sessions:
        s.stop_counting()

    with flips_lock:
        flip_ms = list(flips)
    per = [s.report(flip_ms, t_end) for s in sessions]
    totals = {k: sum(r["counts"][k] for r in per) for k in sessions[0].counts}
    totals["hung"] = sum(1 for r in per if r["hung"])
    totals["not_selected"] = not_selected
    control, undecodable = {}, {}
    for r in per:
        for k, v in r["control_received"].items():
            control[k] = control.get(k, 0) + v
        for k, v in r["undecodable"].items():
            undecodable[k] = undecodable.get(k, 0) + v
    out = {
        "sessions": args.sessions,
        "t3_s": args.t3,
        "load_start_ms": ms(args.t0, t_start),
        "load_end_ms": ms(args.t0, t_end),
        "flips_ms": flip_ms,
        "totals": totals,
        "control_received": control,
        "undecodable": undecodable,
        "per_session": per,
    }
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    sys.stdout.flush()

    # Close the sessions (secsgem sends Separate.req), bounded: secsgem's own waits are not all.
    closers = [threading.Thread(target=s.handler.disable, daemon=True) for s in sessions]
    for c in closers:
        c.start()
    for c in closers:
        c.join(3.0)
    # secsgem leaves non-daemon threads (reconnect, timers) behind; do not wait for them.
    os._exit(0)


if __name__ == "__main__":
    main()
