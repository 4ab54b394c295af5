#!/usr/bin/env python3
"""Traffic for .ci/systemd-check, run inside the systemd container (stdlib only).

Until STOP_FILE exists: GET /hello on a new connection each time (every answer must be 200 from
v1), and one HSMS equipment session (Select.req, then S1F1 with the W-bit, one at a time, each
answered by S1F2 with its system bytes) on a single connection that must never close. Counts go
to STATUS_FILE every 0.2 s (so the caller can wait for progress); the summary is printed as JSON.
Exit 0 only with no failure of either kind.

    python3 systemd-check.py STATUS_FILE STOP_FILE
"""
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time

status_file, stop_file = sys.argv[1], sys.argv[2]
lock = threading.Lock()
counts = {"http_ok": 0, "http_fail": 0, "http_failures": [], "hsms_replies": 0, "hsms_error": None}


def stopping():
    return os.path.exists(stop_file)


def http_loop():
    while not stopping():
        try:
            c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
            c.request("GET", "/hello")
            r = c.getresponse()
            body = r.read()
            c.close()
            ok = r.status == 200 and b"(version v1)" in body
            why = f"status {r.status}: {body[:80]!r}"
        except OSError as e:
            ok, why = False, f"{type(e).__name__}: {e}"
        with lock:
            if ok:
                counts["http_ok"] += 1
            else:
                counts["http_fail"] += 1
                if len(counts["http_failures"]) < 5:
                    counts["http_failures"].append(f"{time.strftime('%H:%M:%S')} {why}")


def send(s, session, stream_w, function, stype, system, body=b""):
    # 4-byte length (10 + body), then the header >HBBBBL: session, W|stream, function, PType 0, SType, system bytes.
    s.sendall(struct.pack(">LHBBBBL", 10 + len(body), session, stream_w, function, 0, stype, system) + body)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("zerodown closed the equipment connection")
        buf += chunk
    return buf


def recv_msg(s):
    (length,) = struct.unpack(">L", recv_exact(s, 4))
    session, b2, function, ptype, stype, system = struct.unpack(">HBBBBL", recv_exact(s, 10))
    body = recv_exact(s, length - 10)
    return session, b2, function, ptype, stype, system, body


def hsms_loop():
    system = 1
    try:
        s = socket.create_connection(("127.0.0.1", 5000), timeout=30)
        send(s, 0xFFFF, 0, 0, 1, system)  # Select.req
        m = recv_msg(s)
        if m[4] != 2 or m[5] != system or m[2] != 0:
            raise RuntimeError(f"Select.req answered by SType {m[4]} status {m[2]} system {m[5]}")
        while not stopping():
            system += 1
            send(s, 1, 0x80 | 1, 1, 0, system)  # S1F1 W (Are You There)
            while True:
                m = recv_msg(s)
                if m[4] == 5:  # Linktest.req from zerodown: answer it, keep waiting for S1F2
                    send(s, 0xFFFF, 0, 0, 6, m[5])
                    continue
                break
            if (m[4], m[1] & 0x7F, m[2], m[5]) != (0, 1, 2, system):
                raise RuntimeError(f"S1F1 system {system} answered by SType {m[4]} S{m[1] & 0x7F}F{m[2]} system {m[5]}")
            with lock:
                counts["hsms_replies"] += 1
            time.sleep(0.01)
        send(s, 0xFFFF, 0, 0, 9, system + 1)  # Separate.req: the equipment ends the session
        s.close()
    except Exception as e:  # noqa: BLE001 - any failure is the result
        with lock:
            counts["hsms_error"] = f"{time.strftime('%H:%M:%S')} after {counts['hsms_replies']} replies: {type(e).__name__}: {e}"


def report():
    with lock:
        text = json.dumps(counts)
    with open(status_file + ".tmp", "w") as f:
        f.write(text)
    os.replace(status_file + ".tmp", status_file)


threads = [threading.Thread(target=http_loop), threading.Thread(target=hsms_loop)]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    report()
    time.sleep(0.2)
report()
print(json.dumps(counts))
sys.exit(0 if counts["http_fail"] == 0 and counts["hsms_error"] is None else 1)
