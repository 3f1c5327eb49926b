#!/usr/bin/python3
"""Lab integration test: a steady pair under traffic with checkpoints at the default rate
for FTPAIR_STEADY_SECONDS (default 60) seconds: zero spurious failovers, roles unchanged,
no heartbeat-driven promotion, no connection lost. Exit 0 pass, 1 fail, 77 skip."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402

SECONDS = int(os.environ.get("FTPAIR_STEADY_SECONDS", "60"))


def failovers(node):
    s = L.scrape(node)
    return sum(v for (n, _), v in (s or {}).items() if n == "ftpair_failovers_total")


def main():
    L.require_lab(need=())
    with L.LabSession(deadline_s=SECONDS + 60) as lab:
        chk = lab.checker
        lab.setup()
        lab.start_node("a", "--role", "active")
        lab.start_node("b", "--role", "standby")
        chk.check("b in sync", L.wait_until(lambda: L.metric(L.scrape("a"), "ftpair_replication_in_sync") == 1, 10))
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", 7000, "--udp"])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)
        c = lab.background("client", [L.PY, L.TRAFFIC, "echo-client", "--host", L.SERVER_IP, "--port", 7000,
                                      "--conns", 16, "--seconds", SECONDS, "--rate-bytes-per-s", 65536, "--json"])
        # Churn: a new UDP flow every 100 ms keeps checkpoints running at their default rate.
        churn = lab.background("client", ["/bin/sh", "-c",
                                          "while :; do %s %s udp-client --host %s --port 7000 --count 1 "
                                          ">/dev/null 2>&1; sleep 0.1; done" % (L.PY, L.TRAFFIC, L.SERVER_IP)])
        f0 = failovers("a") + failovers("b")
        ck0 = L.metric(L.scrape("a"), "ftpair_checkpoints_total")
        misses0 = L.metric(L.scrape("b"), "ftpair_heartbeat_misses_total")
        t_end = time.monotonic() + SECONDS
        flips = 0
        while time.monotonic() < t_end:
            if L.metric(L.scrape("a"), "ftpair_vip_owner") != 1 or L.metric(L.scrape("b"), "ftpair_vip_owner") != 0:
                flips += 1
            time.sleep(0.5)
        while c.alive() and time.monotonic() < t_end + 30:
            time.sleep(0.2)
        churn.stop()
        j = L.last_json("\n".join(c.snapshot()))
        sa, sb = L.scrape("a"), L.scrape("b")
        ck = L.metric(sa, "ftpair_checkpoints_total") - ck0
        misses = L.metric(sb, "ftpair_heartbeat_misses_total") - misses0
        chk.check("zero spurious failovers in %d s" % SECONDS, failovers("a") + failovers("b") - f0 == 0 and flips == 0,
                  "failovers %g, role changes seen %d" % (failovers("a") + failovers("b") - f0, flips))
        chk.check("checkpoints ran meanwhile (flows churning)", ck > SECONDS, "%g checkpoints" % ck)
        chk.check("all 16 connections intact", j and j.get("ok") == 16, str(j))
        print("RESULT steady seconds=%d checkpoints=%d heartbeat_misses=%d spurious_failovers=%d" %
              (SECONDS, ck, misses, failovers("a") + failovers("b") - f0))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
