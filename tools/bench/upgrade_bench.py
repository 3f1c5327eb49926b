#!/usr/bin/python3
"""Upgrade benchmark: runs the in-service upgrade lab test (tests/lab/test_upgrade.py) N times
and writes the headline figures as JSON lines:

  upgrade_s                            whole upgrade of the pair (ftpairctl upgrade), median
  upgrade_s_max                        the slowest run
  upgrade_connections_survived_ratio   TCP connections alive after / open before, worst run
  upgrade_gap_ms_max                   longest pause any connection saw during an upgrade
  upgrade_rollback_s                   upgrade to a version failing its health check + rollback

Every run must pass the test's checks; a failed run fails the benchmark.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = []
    for i in range(a.runs):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            res = f.name
        env = dict(os.environ, FTPAIR_UPGRADE_RESULTS=res)
        r = subprocess.run(["/usr/bin/python3", os.path.join(REPO, "tests", "lab", "test_upgrade.py")],
                           env=env, capture_output=True, text=True)
        sys.stdout.write(r.stdout[-3000:])
        if r.returncode != 0:
            print("upgrade run %d failed (exit %d)" % (i + 1, r.returncode))
            return 1
        with open(res) as f:
            runs.append(json.load(f))
        os.unlink(res)
        u = runs[-1]["upgrade"]
        print("[run %d] upgrade %.2f s, %d/%d connections, max gap %s ms; rollback %.2f s" % (
            i + 1, u["upgrade_s"], u["client"]["ok"], u["client"]["conns"], u["client"]["max_gap_ms"],
            runs[-1]["rollback"]["upgrade_s"]))
        sys.stdout.flush()
    up = [r["upgrade"]["upgrade_s"] for r in runs]
    params = {"runs": len(runs), "conns": runs[0]["upgrade"]["client"]["conns"], "health_window_s": 3}
    lines = [
        {"name": "upgrade_s", "value": round(statistics.median(up), 3), "unit": "s", "params": params},
        {"name": "upgrade_s_max", "value": round(max(up), 3), "unit": "s", "params": params},
        {"name": "upgrade_connections_survived_ratio",
         "value": min(r["upgrade"]["connections_survived_ratio"] for r in runs), "unit": "ratio", "params": params},
        {"name": "upgrade_gap_ms_max", "value": max(r["upgrade"]["client"]["max_gap_ms"] for r in runs),
         "unit": "ms", "params": params},
        {"name": "upgrade_rollback_s", "value": round(statistics.median(r["rollback"]["upgrade_s"] for r in runs), 3),
         "unit": "s", "params": params},
    ]
    with open(a.out, "a") as f:
        for ln in lines:
            f.write(json.dumps(ln) + "\n")
    for ln in lines:
        print("RESULT", json.dumps(ln))
    return 0


if __name__ == "__main__":
    sys.exit(main())
