#!/usr/bin/python3
"""Failover benchmark (issue 4): the pair lab, constant-rate UDP timed to the packet.

  failover_bench.py [--timers 5x8,3x8,dp] [--kills 10] [--stops 5] [--stalls 5] [--terms 5]
                    [--steady-s 60] [--pps 5000] [--out RESULTS.jsonl]

For each heartbeat setting INTERVALxMISSES (ms x beats) the pair runs in strict mode:
  1. a steady run of --steady-s seconds with iperf3 at full rate, UDP and byte-checked TCP
     echo streams, checkpoints at the default rate, and no fault: every failover counted
     then is spurious;
  2. repeated faults of the current active while a constant-rate UDP stream (client ->
     server through the NAT) and 8 byte-checked TCP echo connections run: SIGKILL of ftpaird
     (cause kill), SIGSTOP (stop), and a stall of only the worker lcore through the test hook
     (worker_stall; only for the first setting and dp), and a service stop (SIGTERM, cause
     term; the first setting only), which with failover.handover_on_stop (the default) is a
     graceful switchover to the standby before the old active exits.
"dp" is the dataplane beats (issue 19): failover.dataplane_beat_us=1000, 3 missed, a 1 ms
probe over the fast beats, the lab's control beats beside them. After each fault the old active restarts,
     rejoins as standby and resyncs before the next one.

Failover time = arrival of the first datagram the new active forwarded - the moment of
the fault (CLOCK_MONOTONIC, shared by the namespaces). The old active forwards nothing after
the fault, so the first arrival more than 2 ms after it is the new active's. Packets lost =
sequence numbers between the last datagram before the gap and the first after it that never
arrived. The sink also checks that the NAT port did not change (the mapping survived).

Writes JSON lines {"name","value","unit","params"} to --out (appends) and a summary on
stderr. Needs root and the lab (takes the lab lock like the lab tests).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "lab"))
import labutil as L  # noqa: E402

STREAM = os.path.join(HERE, "udp_stream.py")
RECORD = struct.Struct("<QQH6x")
ECHO_PORT = 7000
UDP_PORT = 9999
IPERF_PORT = 5201
DP_DEFAULT = (1000, 3, 2000)  # timers=dp: failover.dataplane_beat_us, _miss, _probe_us


def other(n):
    return "b" if n == "a" else "a"


def scrape(node):
    return L.scrape(node, timeout=1.0)


def m(node, name, **labels):
    s = scrape(node)
    return None if s is None else L.metric(s, name, **labels)


def failovers(node):
    s = scrape(node)
    if s is None:
        return 0
    return sum(L.metric(s, "ftpair_failovers_total", reason=r) or 0
               for r in ("peer_silent", "peer_unhealthy", "switchover", "forced", "dp_silent", "dp_worker_stall",
                         "peer_domain_event", "election"))


def pair_ready(active, dp=False):
    sb = other(active)
    # With dataplane beats, the standby's watch must be armed (failover.dataplane_arm_ms after
    # it first heard the peer as a standby in sync) before a fault is the dataplane beats' to detect.
    return (m(active, "ftpair_vip_owner") == 1 and m(active, "ftpair_replication_in_sync") == 1
            and m(sb, "ftpair_role", state="STANDBY_READY") == 1 and (not dp or m(sb, "ftpair_dp_watch_armed") == 1))


class Bench:
    def __init__(self, lab, a):
        self.lab, self.a = lab, a
        self.rows = []
        self.runs = []        # one dict per fault
        self.active = "a"
        self.sets = []
        self.dp = False       # the pair runs dataplane beats
        self.unplanned = {}   # timers -> failovers between faults that no fault caused

    def emit(self, name, value, unit, **params):
        self.rows.append({"name": name, "value": value, "unit": unit, "params": params})

    def node_args(self, hi, miss):
        """hi a tuple: the dataplane beats (beat us, miss, probe us), beside the lab's control beats."""
        if isinstance(hi, tuple):
            return ["--set", "failover.dataplane_beat_us=%d" % hi[0], "--set", "failover.dataplane_miss=%d" % hi[1],
                    "--set", "failover.dataplane_probe_us=%d" % hi[2], "--set", "checkpoint.mode=strict"]
        return ["--set", "failover.heartbeat_interval_ms=%d" % hi, "--set", "failover.miss_threshold=%d" % miss,
                "--set", "checkpoint.mode=strict"]

    def start_pair(self, hi, miss):
        for n in ("a", "b"):
            L.lab("stop", n, check=False)
        self.sets = self.node_args(hi, miss)
        self.dp = isinstance(hi, tuple)
        self.lab.start_node("a", "--role", "active", *self.sets)
        self.lab.start_node("b", "--role", "standby", *self.sets)
        self.active = "a"
        if not L.wait_until(lambda: pair_ready("a", self.dp), 30, 0.2):
            raise L.LabError("pair did not come up with timers %s" % (self.sets,))

    def recover(self, old):
        """The faulted node restarts with no role: it must join as standby and resync."""
        L.lab("stop", old, check=False)
        self.lab.start_node(old, *self.sets)
        if not L.wait_until(lambda: pair_ready(self.active, self.dp), 30, 0.2):
            raise L.LabError("%s did not rejoin as standby in sync" % old)

    def settle(self):
        """After a run that may have failed over on its own: find the active, bring the other
        node back as standby in sync."""
        owners = [n for n in ("a", "b") if m(n, "ftpair_vip_owner") == 1]
        if len(owners) != 1:
            raise L.LabError("expected one active, found %s" % (owners or "none"))
        self.active = owners[0]
        sb = other(self.active)
        pid = L.node_pid(sb)
        if not pid or not L.pid_alive(pid) or not pair_ready(self.active, self.dp):
            self.recover(sb)

    def steady(self, timers, seconds):
        if seconds <= 0:
            return 0
        f0 = failovers("a") + failovers("b")
        iperf = self.lab.background("client", ["iperf3", "-c", L.SERVER_IP, "-p", IPERF_PORT, "-t", seconds,
                                               "-P", "2", "--connect-timeout", "3000"])
        c = L.start_client(self.lab, 8, seconds)
        time.sleep(seconds + 1)
        j = (L.client_result(c, 30) or {})
        iperf.stop(timeout=10)
        spurious = failovers("a") + failovers("b") - f0
        if spurious:  # why, before a restart truncates the logs
            for n in ("a", "b"):
                sc = scrape(n) or {}
                L.log("steady %s: %s failovers by reason: %s" % (timers, n, {
                    r: L.metric(sc, "ftpair_failovers_total", reason=r) for r in (
                        "peer_silent", "peer_unhealthy", "dp_silent", "dp_worker_stall", "switchover", "forced",
                        "election", "peer_domain_event")} if sc else "(no scrape)"))
                try:
                    with open(os.path.join(L.RUN, "%s.log" % n), errors="replace") as f:
                        for line in f:
                            if "promoted (" in line or "fenc" in line:
                                L.log("steady %s: %s: %s" % (timers, n, line.strip()[:400]))
                except OSError:
                    pass
                keep = os.path.join(L.RUN, "%s.steady-%s.log" % (n, timers.replace(":", "_")))
                try:
                    shutil.copyfile(os.path.join(L.RUN, "%s.log" % n), keep)
                    L.log("steady %s: %s's log kept as %s" % (timers, n, keep))
                except OSError:
                    pass
        self.emit("spurious_failovers", spurious, "failovers", seconds=seconds, timers=timers, load="iperf3+echo+udp")
        L.log("steady %s: %d s, %d spurious failovers, echo %s" % (timers, seconds, spurious,
                                                                   {k: j.get(k) for k in ("conns", "ok", "max_gap_ms")}))
        return spurious

    def fault(self, timers, cause):
        before = self.active
        self.settle()  # a failover nobody caused since the last fault moved the role: find it
        if self.active != before:
            self.unplanned[timers] = self.unplanned.get(timers, 0) + 1
            L.log("%s: the role moved %s -> %s between faults (a spurious failover)" % (timers, before, self.active))
        old = self.active
        new = other(old)
        c = L.start_client(self.lab, 8, 5)
        time.sleep(1.5)
        pid = L.node_pid(old)
        t0 = time.monotonic_ns()
        if cause == "kill":
            os.kill(pid, 9)
        elif cause == "stop":
            os.kill(pid, 19)
        elif cause == "term":
            os.kill(pid, 15)
        else:  # worker_stall: SIGUSR1 is ftpaird's test hook (worker.test_hooks)
            os.kill(pid, 10)
        took_over = L.wait_until(lambda: m(new, "ftpair_vip_owner") == 1, 10, 0.01)
        t_owner = time.monotonic_ns()
        j = (L.client_result(c, 40) or {})
        promo = {}
        try:
            with open(os.path.join(L.RUN, "%s.log" % new), errors="replace") as f:
                for line in f:
                    mm = re.search(r"promoted \((.*)\): fenced in ([0-9.]+) ms, active ([0-9.]+) ms after the decision", line)
                    if mm:
                        promo = {"reason": mm.group(1), "fence_ms": float(mm.group(2)), "promote_ms": float(mm.group(3))}
        except OSError:
            pass
        self.active = new
        run = {"timers": timers, "cause": cause, "t0": t0, "t_owner": t_owner, "promotion": promo,
               "old": old, "took_over": bool(took_over),
               "conns": j.get("conns", 0), "ok": j.get("ok", 0), "reset": j.get("reset"),
               "corrupt": j.get("corrupt"), "max_gap_ms": j.get("max_gap_ms")}
        self.runs.append(run)
        with open(os.path.join(L.RUN, "failover-bench-runs.json"), "w") as f:
            json.dump(self.runs, f, indent=1)
        if not took_over:
            raise L.LabError("%s did not take over after %s of %s" % (new, cause, old))
        self.recover(old)
        time.sleep(0.5)


def analyse(runs, path):
    """Per fault: the longest silence in the stream from 5 ms before the fault to 300 ms after
    the new active was seen owning the VIPs.
    Its end is the first datagram the new active forwarded."""
    import bisect
    data = open(path, "rb").read()
    recs = [RECORD.unpack_from(data, o) for o in range(0, len(data) - RECORD.size + 1, RECORD.size)]
    recs.sort()
    times = [r[0] for r in recs]
    seqs = set(r[1] for r in recs)
    for run in runs:
        t0 = run["t0"]
        # From just before the fault to a little after the new active was seen owning the
        # VIPs (polled): later silences (the old node restarting) belong to no failover.
        lo = bisect.bisect_left(times, t0 - 5_000_000)
        hi = bisect.bisect_right(times, run.get("t_owner", t0 + 5_000_000_000) + 300_000_000)
        best = None
        for i in range(max(lo, 1), hi):
            g = times[i] - times[i - 1]
            if best is None or g > best[0]:
                best = (g, i)
        if best is None:
            run["failover_ms"] = None
            continue
        last_old, first_new = recs[best[1] - 1], recs[best[1]]
        # kill and stop act at once; the worker-stall hook takes effect at the worker's next
        # loop, so that fault starts when the stalled worker forwarded its last datagram.
        start = t0 if run["cause"] in ("kill", "stop", "term") else max(t0, last_old[0])
        run["failover_ms"] = (first_new[0] - start) / 1e6
        run["gap_ms"] = (first_new[0] - last_old[0]) / 1e6
        run["last_old_ms"] = (last_old[0] - t0) / 1e6
        run["lost"] = sum(1 for s in range(last_old[1] + 1, first_new[1]) if s not in seqs)
        run["nat_port_kept"] = last_old[2] == first_new[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timers", default="5x8,3x8")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--stops", type=int, default=5)
    ap.add_argument("--stalls", type=int, default=5)
    ap.add_argument("--terms", type=int, default=5, help="service stops (SIGTERM) of the active: a handover")
    ap.add_argument("--steady-s", type=int, default=60)
    ap.add_argument("--dp-steady-s", type=int, default=None, help="the steady run of timers=dp (default --steady-s)")
    ap.add_argument("--pps", type=float, default=5000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    L.require_lab(need=("iperf3",))
    timers = []
    for t in a.timers.split(","):
        if t == "dp" or t.startswith("dp:"):  # dp or dp:BEAT_US:MISS:PROBE_US
            dp = DP_DEFAULT if t == "dp" else tuple(int(x) for x in t.split(":")[1:4])
            timers.append((t, dp, 0))
            continue
        hi, miss = t.split("x")
        timers.append((t, int(hi), int(miss)))
    sink_file = os.path.join(L.RUN, "failover-bench-udp.bin")
    with L.LabSession(deadline_s=3600) as lab:
        lab.setup()
        b = Bench(lab, a)
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", ECHO_PORT])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)
        iperf_srv = lab.background("server", ["iperf3", "-s", "-p", IPERF_PORT])
        sink = lab.background("server", [L.PY, STREAM, "sink", "--port", UDP_PORT, "--out", sink_file])
        sink.wait_line(lambda s: s.startswith("LISTENING"), 10)
        for k, (name, hi, miss) in enumerate(timers):
            b.start_pair(hi, miss)
            src = lab.background("client", [L.PY, STREAM, "source", "--host", L.SERVER_IP, "--port", UDP_PORT,
                                            "--pps", a.pps])
            time.sleep(1)
            b.steady(name, a.dp_steady_s if name.startswith("dp") and a.dp_steady_s else a.steady_s)
            b.settle()
            plan = ["kill"] * a.kills
            if k == 0 or name.startswith("dp"):
                plan += ["stop"] * a.stops + ["worker_stall"] * a.stalls
            if k == 0:
                plan += ["term"] * a.terms
            for cause in plan:
                b.fault(name, cause)
                L.log("%s %s: %s -> %s, echo ok %s/%s" % (name, cause, b.runs[-1]["old"], b.active,
                                                           b.runs[-1]["ok"], b.runs[-1]["conns"]))
            src.stop(timeout=5)
            b.emit("spurious_failovers_between_faults", b.unplanned.get(name, 0), "failovers", timers=name,
                   faults=len(plan))
        sink.stop(timeout=5)
        iperf_srv.stop()
        echo.stop()
        analyse(b.runs, sink_file)
        groups = {}
        for r in b.runs:
            groups.setdefault((r["timers"], r["cause"]), []).append(r)
        for (tm, cause), rs in groups.items():
            fo = [r["failover_ms"] for r in rs if r.get("failover_ms") is not None]
            lost = [r.get("lost", 0) for r in rs]
            conns = sum(r["conns"] for r in rs)
            ok = sum(r["ok"] for r in rs)
            p = {"cause": cause, "timers": tm, "runs": len(rs)}
            if fo:
                b.emit("failover_ms_p50", round(statistics.median(fo), 2), "ms", **p)
                b.emit("failover_ms_max", round(max(fo), 2), "ms", **p)
                b.emit("failover_ms_min", round(min(fo), 2), "ms", **p)
            gaps = [r["gap_ms"] for r in rs if r.get("gap_ms") is not None]
            if gaps:
                b.emit("failover_stream_gap_ms_p50", round(statistics.median(gaps), 2), "ms", **p)
            promo = [r["promotion"]["promote_ms"] for r in rs if r.get("promotion")]
            if promo:
                b.emit("failover_promote_ms_p50", round(statistics.median(promo), 2), "ms", **p)
                b.emit("failover_promote_ms_max", round(max(promo), 2), "ms", **p)
            fence = [r["promotion"]["fence_ms"] for r in rs if r.get("promotion")]
            if fence:
                b.emit("failover_fence_ms_p50", round(statistics.median(fence), 2), "ms", **p)
                b.emit("failover_fence_ms_max", round(max(fence), 2), "ms", **p)
            b.emit("failover_packets_lost", statistics.median(lost), "packets", **p)
            b.emit("failover_packets_lost_max", max(lost), "packets", **p)
            b.emit("connections_survived_ratio", round(ok / conns, 4) if conns else 0, "ratio", mode="strict", **p)
            b.emit("failover_nat_port_kept_ratio", sum(1 for r in rs if r.get("nat_port_kept")) / len(rs), "ratio", **p)
            L.log("%s %s: %d runs, failover ms %s, promotion ms %s (of which fencing %s), lost %s, connections %d/%d" % (
                tm, cause, len(rs), [round(x, 1) for x in fo], promo, fence, lost, ok, conns))
        lab.checker.check("every fault was followed by a takeover", all(r["took_over"] for r in b.runs))
        rows = b.rows
        if a.out:
            with open(a.out, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        with open(os.path.join(L.RUN, "failover-bench-runs.json"), "w") as f:
            json.dump(b.runs, f, indent=1)
        for r in rows:
            print(json.dumps(r))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
