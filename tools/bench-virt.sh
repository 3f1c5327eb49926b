#!/bin/sh
# VM lifecycle figures on a real libvirtd (TCG, diskless-BIOS domains): deploy time, fence time
# (destroy and suspend), and re-protection from the warm pool against defining a new domain.
# Prints JSON lines {"name","value","unit","params"} on stdout; progress on stderr.
# Usage: tools/bench-virt.sh [build-dir] [rounds]    (root; starts and stops its own libvirtd)
# Two kinds of replacement figure:
#   replace_running_s: blank-image domains, the replacement runs with its role and membership set;
#   reprotect_s (the headline, "standby in sync"): tests/virt/test_virt_reprotect.py, rounds times: guests that run ftpaird (the
#     x86-64-v2 build from `make guest-build`), the replacement assumes the failed member's identity
#     and the active full-syncs it; measured by `ftpair-virt pool replace` up to in sync.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$HERE/build}" && pwd)
ROUNDS=${2:-3}
export FTPAIR_VIRT="$BUILD/virt/ftpair-virt" FTPAIR_REPO="$HERE" FTPAIRCTL="$BUILD/tools/ftpairctl/ftpairctl"
export FTPAIR_COMMISSION="$BUILD/virt/ftpair-commission" FTPAIRD_GUEST="${FTPAIRD_GUEST:-$HERE/build-guest/control/ftpaird}"
exec /usr/bin/python3 - "$ROUNDS" <<'PY'
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("FTPAIR_REPO", os.getcwd()), "tests", "virt"))
import virtutil as V

rounds = int(sys.argv[1])
V.log = lambda msg: sys.stderr.write(msg + "\n")
V.require()
res = {k: [] for k in ("deploy", "fence_destroy", "fence_suspend", "pool", "fresh", "refill")}


def emit(name, vals, unit, params):
    if vals:
        print(json.dumps({"name": name, "value": round(statistics.median(vals), 4), "unit": unit,
                          "params": dict(params, rounds=len(vals), min=round(min(vals), 4), max=round(max(vals), 4))}))


def ok(rc, rep, err, what):
    if rc != 0:
        raise SystemExit("bench-virt: %s failed: %s" % (what, err))
    return rep


with V.VirtSession(prefix="ftvb") as s:
    img = s.make_image("node.img")
    for r in range(rounds):
        spec = s.write_spec("ftvb%d" % r, image=img, pool=1, name="spec%d.yaml" % r)
        rep = ok(*s.virt("deploy", "--spec", spec), "deploy")
        res["deploy"].append(rep["seconds"])
        rep = ok(*s.virt("pool", "fill", "--spec", spec), "pool fill")
        rep = ok(*s.virt("fence", "--spec", spec, "--node", "b", "--action", "suspend"), "fence suspend")
        res["fence_suspend"].append(rep["seconds"] * 1000)
        rep = ok(*s.virt("fence", "--spec", spec, "--node", "b"), "fence destroy")
        res["fence_destroy"].append(rep["seconds"] * 1000)
        rep = ok(*s.virt("pool", "replace", "--spec", spec, "--failed", "b"), "pool replace")
        res["pool"].append(rep["replace_s"])
        res["refill"].append(rep["refill_s"])
        # The baseline: node a fails too and is replaced by a freshly defined domain.
        ok(*s.virt("fence", "--spec", spec, "--node", "a"), "fence a")
        rep = ok(*s.virt("pool", "replace", "--spec", spec, "--failed", "a", "--fresh"), "fresh replace")
        res["fresh"].append(rep["replace_s"])
        s.virt("teardown", "--spec", spec, "--acpi-timeout-ms", "0")

params = {"domain": "tcg-bios-32MiB", "host": "2 shared vCPUs"}
emit("virt_deploy_s", res["deploy"], "s", params)
emit("fence_ms", res["fence_destroy"], "ms", dict(params, action="destroy"))
emit("fence_ms", res["fence_suspend"], "ms", dict(params, action="suspend"))
# Not the headline reprotect_s (that one is "a new standby in sync", below): these guests run no
# daemon, so the replacement is only running with its role and membership set.
emit("replace_running_s", res["pool"], "s", dict(params, source="pool", reached="running as standby"))
emit("replace_running_s", res["fresh"], "s", dict(params, source="fresh", reached="running as standby"))
emit("pool_refill_s", res["refill"], "s", params)

# With ftpaird in the guests, up to "standby in sync": the test, once per round.
import subprocess
import tempfile
out = tempfile.NamedTemporaryFile(prefix="ftpair-reprotect-", suffix=".jsonl", delete=False).name
sync = {"pool": [], "fresh": [], "refill": [], "fence": []}
for r in range(rounds):
    p = subprocess.run(["/usr/bin/python3", os.path.join(os.environ["FTPAIR_REPO"], "tests", "virt", "test_virt_reprotect.py")],
                       env=dict(os.environ, FTPAIR_BENCH_OUT=out), capture_output=True, text=True)
    sys.stderr.write("bench-virt: reprotect round %d: exit %d\n" % (r, p.returncode))
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-3000:])
        raise SystemExit("bench-virt: test_virt_reprotect.py failed")
for line in open(out):
    j = json.loads(line)
    key = {"reprotect_s": j["params"].get("source"), "pool_refill_s": "refill", "fence_ms": "fence"}[j["name"]]
    sync[key].append(j["value"])
os.unlink(out)
gparams = {"domain": "tcg-kernel-initramfs-768MiB", "host": "2 shared vCPUs", "flows": 200}
emit("reprotect_s", sync["pool"], "s", dict(gparams, source="pool", reached="standby in sync"))
emit("reprotect_s", sync["fresh"], "s", dict(gparams, source="fresh", reached="standby in sync"))
emit("pool_refill_s", sync["refill"], "s", dict(gparams, reached="spare booted to its claim listener, paused"))
emit("fence_ms", sync["fence"], "ms", dict(gparams, action="destroy"))
PY
