#!/bin/sh
# VM lifecycle figures on a real libvirtd (TCG, diskless-BIOS domains): deploy time, fence time
# (destroy and suspend), and re-protection from the warm pool against defining a new domain.
# Prints JSON lines {"name","value","unit","params"} on stdout; progress on stderr.
# Usage: tools/bench-virt.sh [build-dir] [rounds]    (root; starts and stops its own libvirtd)
# Note: "re-protected" here means the replacement domain runs as standby with its role and
# membership set; the guests run no ftpaird, so "standby in sync" is not part of the figure.
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$HERE/build}" && pwd)
ROUNDS=${2:-3}
export FTPAIR_VIRT="$BUILD/virt/ftpair-virt" FTPAIR_REPO="$HERE"
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
emit("reprotect_s", res["pool"], "s", dict(params, source="pool", reached="running as standby"))
emit("reprotect_s", res["fresh"], "s", dict(params, source="fresh", reached="running as standby"))
emit("pool_refill_s", res["refill"], "s", params)
PY
