#!/usr/bin/python3
"""Lab integration test: faults on the management link between the nodes (issue 16), short.

The pair at the lab config's default timers (5 ms beats, 40 ms of silence fails over), 8
byte-checked echo connections through the active, both nodes' /metrics polled all along
(tools/bench/faults_bench.py's PairWatch; tools/lab/faults.py injects):

  1. 5% random loss both ways (nftables numgen), FAULTS_TEST_SECONDS (10) s: no failover,
     never two actives, never no active, every connection kept
  2. then a SIGKILL of the active under 5% loss: the standby's own silence at the decision
     (its log) is at most 100 ms, and the first packet the new active forwards comes within
     KILL_BOUND_MS of the kill; connections kept, never two actives
  3. delay 5 ms +- 5 ms, uniform, on every IPv4 frame between the nodes (userspace relay;
     frames reorder): no failover, never two actives, never no active, connections kept
  4. an asymmetric partition, the active's frames to the standby dropped: the standby must
     fence the active before it takes over (once), so never two actives; no active for at
     most NO_ACTIVE_BOUND_MS; connections kept
  5. the other direction, the standby's frames to the active dropped: no failover, never two
     actives, never no active, connections kept
Each fault must also show that it acted (nftables drop counters, the relay's own figures).

The full matrix with 60 s windows is `make bench ONLY=faults`. Exit 0 pass, 1 fail, 77 skip.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "bench"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "lab"))
import labutil as L  # noqa: E402
import faults_bench as B  # noqa: E402
import faults as F  # noqa: E402

SECONDS = int(os.environ.get("FAULTS_TEST_SECONDS", "10"))
DETECT_BOUND_MS = 100      # the bound: a kill under 5% loss detected within 100 ms
# Kill -> first packet forwarded by the new active, seen from outside: the 40 ms threshold plus
# one beat, fencing (the process fencer waits for the killed process to exit: 5-20 ms here),
# the promotion (1-20 ms), the next echo packet and a 2 ms counter poll.
KILL_BOUND_MS = 150
# A partition that fails the pair over: the fencer kills the active, then the standby takes
# the VIPs; the gap is fence + promotion, polled from outside every ~15 ms per node.
NO_ACTIVE_BOUND_MS = 100


def window_checks(chk, w, what, expect_failovers=0):
    ok = w["failovers"] == expect_failovers
    chk.check("%s: %d failover(s) in %d s" % (what, expect_failovers, w["seconds"]), ok,
              "counted %g (restarts of a fenced node %d)" % (w["failovers"], w["restarts"]))
    chk.check("%s: never two actives" % what, w["double_samples"] == 0,
              "%d rounds with two owners (%d rounds, %.1f ms each)" % (w["double_samples"], w["rounds"], w["round_ms"]))
    chk.check("%s: every connection kept, every byte checked" % what,
              w["ok"] == w["conns"] and w["client"].get("corrupt", 0) == 0, str(w["client"]))


def main():
    L.require_lab(need=("nft", "tc"))
    with L.LabSession(deadline_s=150 + 5 * SECONDS) as lab:
        chk = lab.checker
        lab.setup()
        B.pin_daemon()   # one build throughout, even if the tree is rebuilt meanwhile
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", B.ECHO_PORT])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)
        pair = B.Pair(lab)
        pair.start_fresh()
        try:
            # 1. 5% loss
            w = B.window(lab, pair, "loss:5", SECONDS, 8)
            ev = w["evidence"]
            chk.check("1. 5% loss: frames were dropped", ev["dropped"] > 0, str(ev))
            window_checks(chk, w, "1. 5% loss")
            chk.check("1. 5% loss: never no active", w["no_active_stretches"] == 0,
                      "%.3f s in %d stretches" % (w["no_active_s"], w["no_active_stretches"]))

            # 2. a real kill under 5% loss
            k = B.kill_once(lab, pair, "loss:5")
            chk.check("2. kill under 5% loss: the pair was intact, the standby took over",
                      k["taken"] and k["failover_s"] is not None, k.get("why_not", ""))
            chk.check("2. kill under 5%% loss: detected within %d ms (the new active's silence at the decision)"
                      % DETECT_BOUND_MS, k.get("detect_ms") is not None and k["detect_ms"] <= DETECT_BOUND_MS,
                      "%s: %s ms, fenced in %s ms, active %s ms after" % (
                          k.get("reason"), k.get("detect_ms"), k.get("fence_ms"), k.get("promote_ms")))
            fo_ms = None if k["failover_s"] is None else round(k["failover_s"] * 1000, 1)
            chk.check("2. kill under 5%% loss: first packet forwarded by the new active within %d ms" % KILL_BOUND_MS,
                      fo_ms is not None and fo_ms <= KILL_BOUND_MS, "%s ms" % fo_ms)
            chk.check("2. kill under 5% loss: connections kept, never two actives",
                      k["ok"] == k["conns"] and k["watch"]["double_samples"] == 0,
                      "%d/%d, %d rounds with two owners" % (k["ok"], k["conns"], k["watch"]["double_samples"]))
            print("RESULT kill under loss:5 failover_ms=%s detect_ms=%s" % (fo_ms, k.get("detect_ms")))

            # 3. 5 +- 5 ms jitter through the relay
            w = B.window(lab, pair, "jitter:5:5", SECONDS, 8)
            ev = w["evidence"]
            # ~500 frames a second each way between the nodes; the relay's mean delay should be
            # the fault's 5 ms (its own lateness is reported, not bounded)
            chk.check("3. 5+-5 ms jitter: the relay carried the link, 4-7 ms late on average",
                      ev.get("relayed", 0) > 100 * SECONDS and ev["dropped"] > 0
                      and 4.0 <= (ev.get("delay_ms_mean") or 0) <= 7.0, str(ev))
            window_checks(chk, w, "3. 5+-5 ms jitter")
            chk.check("3. 5+-5 ms jitter: never no active", w["no_active_stretches"] == 0,
                      "%.3f s in %d stretches" % (w["no_active_s"], w["no_active_stretches"]))

            # 4. asymmetric partition: the active's frames to the standby dropped
            w = B.window(lab, pair, "oneway:to_standby", SECONDS, 8)
            chk.check("4. one-way partition: frames were dropped", w["evidence"]["dropped"] > 0, str(w["evidence"]))
            window_checks(chk, w, "4. one-way partition active -> standby", expect_failovers=1)
            chk.check("4. one-way partition: no active for at most %d ms" % NO_ACTIVE_BOUND_MS,
                      w["no_active_max_ms"] <= NO_ACTIVE_BOUND_MS,
                      "longest %.1f ms, %d stretches" % (w["no_active_max_ms"], w["no_active_stretches"]))

            # 5. the other direction: the standby's frames to the active dropped. The standby
            # still hears the active's beats, the active never promotes: no failover at all
            w = B.window(lab, pair, "oneway:to_active", SECONDS, 8)
            chk.check("5. one-way partition standby -> active: frames were dropped", w["evidence"]["dropped"] > 0,
                      str(w["evidence"]))
            window_checks(chk, w, "5. one-way partition standby -> active")
            chk.check("5. one-way partition standby -> active: never no active", w["no_active_stretches"] == 0,
                      "%.3f s in %d stretches" % (w["no_active_s"], w["no_active_stretches"]))
        finally:
            F.clear()
        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s.log ----\n%s----" % (n, L.node_log_tail(n, 25)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
