#!/usr/bin/env bash
# Runs meson's tests and ends with one plain line: "N passed, M failed" (", K skipped").
set -uo pipefail
build=$1; shift
meson test -C "$build" --print-errorlogs --num-processes 1 "$@"
rc=$?
log="$build/meson-logs/testlog.json"
if [ -f "$log" ]; then
  /usr/bin/python3 - "$log" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(f"{p} passed, {f} failed" + (f", {s} skipped" if s else ""))
PY
fi
exit $rc
