# Shared by the bench scripts (sourced, not run).

# render TEMPLATE OUT KEY=VALUE...: copies TEMPLATE to OUT with every @KEY@ replaced by VALUE.
render() {
    python3 - "$@" <<'PY'
import sys
tpl, out, *kvs = sys.argv[1:]
s = open(tpl).read()
for kv in kvs:
    k, v = kv.split("=", 1)
    s = s.replace("@" + k + "@", v)
open(out, "w").write(s)
PY
}
