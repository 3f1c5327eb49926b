#!/usr/bin/python3
"""Soak test of the ftpair pair (issue 8): long running, mixed traffic, a fault every minute.

  soak.py [--seconds 720] [--event-every 60] [--conns 40] [--build BUILD]

In the pair lab (tests/lab/labutil.py; takes the lab lock, so it waits for other lab users):
  - traffic, all through the active (client -> NAT -> server):
      * --conns long-lived kernel TCP connections (tools/lab/traffic.py echo-client), each
        streaming a checked byte stream the whole run; every one must survive;
      * churn (tools/soak/churn.py): short TCP connections opened and closed continuously,
        and one-datagram UDP flows from new source ports, so flows are created and expire all
        the time (the soak shortens the idle timeouts of short flows to 30 s so the table
        turns over many times);
      * a constant-rate UDP stream (tools/bench/udp_stream.py) that times each event's
        outage to the packet (failover_bench.analyse);
  - every --event-every seconds, in turn: a graceful switchover (ftpairctl switchover on the
    active), a forced switchover (ftpairctl switchover --force on the active), and a SIGKILL
    of the active; the killed node restarts with no role, joins as standby and resyncs. Each
    event must end with the pair in sync again, and never two actives (OwnerWatch);
  - every --sample-every seconds: each ftpaird's VmRSS, open fds and threads (/proc); a
    restarted process starts a new series;
  - at the end: the churn stops; the flow tables of the active and the standby are compared
    (see compare_*), then the long-lived connections drain and are checked byte for byte.

Assertions (exit 1 if any fails): every event completed (the pair back in sync); never two
actives; no spurious promotion (one per kill, none otherwise); every long-lived connection
survived; per process series (see analyse_series): RSS growth (last sample - the sample after
warm-up) <= --rss-bound-kib, open fds flat (median of the last 40 s at most 2 above that of the
40 s after warm-up), the daemon's own threads exactly flat and gRPC's sync-server threads +1 at
most (floors over 40 s); no churn flow failed outside an event window; the tables equal.

Writes JSON lines {"name","value","unit","params"} to BUILD/bench/results.jsonl (appends),
the details (samples, events, comparisons) to BUILD/bench/soak-details.json, and a summary.
"""

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def _env_defaults(build):
    """The lab helpers read the binaries' paths from the environment at import."""
    os.environ.setdefault("FTPAIRD", os.path.join(build, "control", "ftpaird"))
    os.environ.setdefault("FTPAIRCTL", os.path.join(build, "tools", "ftpairctl", "ftpairctl"))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=720, help="traffic time (default 720 = 12 min)")
    ap.add_argument("--event-every", type=int, default=60, help="seconds between events (default 60)")
    ap.add_argument("--conns", type=int, default=40, help="long-lived TCP connections (default 40)")
    ap.add_argument("--conn-rate", type=int, default=1024, help="bytes/s per long-lived connection")
    ap.add_argument("--tcp-rate", type=float, default=10, help="short TCP connections per second")
    ap.add_argument("--udp-rate", type=float, default=20, help="new UDP flows per second")
    ap.add_argument("--pps", type=float, default=1000, help="constant UDP stream (outage timing)")
    ap.add_argument("--short-timeout", type=int, default=30,
                    help="idle timeout (s) of UDP and closing TCP flows in the soak")
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=60,
                    help="seconds of a process series before its reference sample")
    ap.add_argument("--rss-bound-kib", type=int, default=4096)
    ap.add_argument("--count-tolerance", type=int, default=2, help="fds: at most this many above the reference")
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--out", default=None, help="results.jsonl (default BUILD/bench/results.jsonl)")
    return ap.parse_args()


A = parse_args()
A.build = os.path.abspath(A.build)
_env_defaults(A.build)
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
sys.path.insert(0, os.path.join(REPO, "tools", "bench"))
import labutil as L  # noqa: E402  ctl, OwnerWatch
import failover_bench as FB  # noqa: E402  pair_ready, other, m, failovers, Bench.recover/settle, analyse
import test_pair_sync as TPS  # noqa: E402  flows_of

CHURN = os.path.join(HERE, "churn.py")
ECHO_PORT = 7000      # TCP echo (long-lived and churn) and UDP echo (churn)
STREAM_PORT = 9999    # constant-rate UDP stream
KINDS = ("graceful", "forced", "kill")
other = FB.other


def ctl(node, *args):
    """ftpairctl --json: 10 s per call, 15 s in all."""
    return L.ctl(node, *args, timeout=15, rpc_timeout=10)


# ------------------------------------------------------------------ sampling --

def proc_sample(pid):
    """{"rss_kib","fds","threads"} of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(line.split(":", 1) for line in f if ":" in line)
        rss = int(st["VmRSS"].split()[0])
        anon = int(st["RssAnon"].split()[0])
        threads = int(st["Threads"])
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return {"rss_kib": rss, "rss_anon_kib": anon, "fds": fds, "threads": threads, "comm": thread_names(pid)}


def thread_names(pid):
    """{thread name: count}: which kind of thread a change in the count is."""
    out = {}
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                    n = f.read().strip()
            except OSError:
                continue
            out[n] = out.get(n, 0) + 1
    except OSError:
        pass
    return out


def smaps_top(pid, n=12):
    """The n largest mappings of a process by Rss (KiB), for the record: where memory sits."""
    maps, cur = [], None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if "-" in parts[0] and ":" not in parts[0]:
                    cur = {"range": parts[0], "name": parts[5] if len(parts) > 5 else "[anon]", "rss_kib": 0}
                    maps.append(cur)
                elif parts[0] == "Rss:" and cur is not None:
                    cur["rss_kib"] = int(parts[1])
    except (OSError, ValueError, IndexError):
        return []
    maps.sort(key=lambda m: -m["rss_kib"])
    return maps[:n]


class Sampler:
    """Every `every` seconds, each running ftpaird: RSS, fds, threads. Series key: node/pid."""

    def __init__(self, every, t0, state):
        self.every, self.t0, self.state = every, t0, state
        self.samples = []          # {"t","node","pid","rss_kib","rss_anon_kib","fds","threads","role"}
        self.smaps = {}            # "node/pid" -> {"first": top mappings, "last": top mappings}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()

    def sample_now(self):
        t = round(time.monotonic() - self.t0, 2)
        for node in ("a", "b"):
            pid = L.node_pid(node)
            if not pid or not L.pid_alive(pid):
                continue
            s = proc_sample(pid)
            if s is None:
                continue
            s.update({"t": t, "node": node, "pid": pid,
                      "role": "active" if self.state["active"] == node else "standby"})
            key = "%s/%d" % (node, pid)
            with self._lock:
                self.samples.append(s)
                first = key not in self.smaps
            if first:
                self.smaps[key] = {"first_t": t, "first": smaps_top(pid)}

    def final_smaps(self):
        for node in ("a", "b"):
            pid = L.node_pid(node)
            if pid and L.pid_alive(pid) and "%s/%d" % (node, pid) in self.smaps:
                self.smaps["%s/%d" % (node, pid)].update({"last": smaps_top(pid)})

    def _run(self):
        while not self._stop.wait(self.every):
            self.sample_now()

    def stop(self):
        self._stop.set()
        self._t.join(5)

    def series(self):
        out = {}
        with self._lock:
            for s in self.samples:
                out.setdefault("%s/%d" % (s["node"], s["pid"]), []).append(s)
        return out


# gRPC's own thread pools (comm names, truncated to 15 characters by the kernel).
GRPC_THREADS = ("default-executo", "resolver-execut", "event_engine", "grpc_global_tim", "timer_manager",
                "grpcpp_sync_ser", "nexting_thread")
SYNC_SERVER = "grpcpp_sync_ser"


def own_threads(sample):
    """Threads that are not gRPC's pools (falls back to all threads without names)."""
    comm = sample.get("comm")
    if not comm:
        return sample["threads"]
    return sum(n for name, n in comm.items() if name not in GRPC_THREADS)


def _median(v):
    return statistics.median(v) if v else None


def analyse_series(series, warmup, rss_bound, tol, window=40.0):
    """Per process series (a restarted process starts a new one):
      RSS: growth = last sample - the reference (the first sample at least `warmup` s into the
        series: start-up, the first full sync and the first role change are over);
      fds: growth = median of the last `window` s - median of the `window` s after warm-up.
        The count depends a little on the moment: a peer restarting closes its connections for
        a few seconds and a reconnect briefly adds one or two (22..27 around a steady 25); the
        median ignores those transients, a leak moves the whole level;
      threads, in two groups by name (/proc/PID/task/*/comm):
        - the daemon's own (main and its std::threads "ftpaird", the DPDK worker and interrupt
          threads, libmicrohttpd): a fixed set, so growth = lowest count of the last `window`
          s - lowest of the `window` s after warm-up must be 0;
        - gRPC's pools (GRPC_THREADS): gRPC 1.51 starts them lazily and sizes them itself
          (the iomgr executor grows up to 2 x CPUs and never shrinks, the event-engine pool
          and the timer manager add threads for bursts and reap some); they are reported,
          and only the sync server's handler threads are bounded: a handler that never
          returns (a Sync stream left open by a role change) would keep one thread per event,
          so their floor may not grow by more than 1 (the standby's Sync stream holds one).
    Series shorter than warm-up + 2 windows are reported, not judged."""
    res = {}
    for key, ss in series.items():
        t_start, t_last = ss[0]["t"], ss[-1]["t"]
        r = {"samples": len(ss), "t_first": t_start, "t_last": t_last,
             "rss_first_kib": ss[0]["rss_kib"], "rss_last_kib": ss[-1]["rss_kib"],
             "fds_min": min(s["fds"] for s in ss), "fds_max": max(s["fds"] for s in ss),
             "threads_min": min(s["threads"] for s in ss), "threads_max": max(s["threads"] for s in ss)}
        ref = next((s for s in ss if s["t"] - t_start >= warmup), None)
        if ref is None or t_last - ref["t"] < 2 * window:
            r["judged"] = False
            res[key] = r
            continue
        head = [s for s in ss if ref["t"] <= s["t"] <= ref["t"] + window]
        tail = [s for s in ss if s["t"] >= t_last - window]
        last = ss[-1]
        after = [s for s in ss if s["t"] >= ref["t"]]
        r.update({
            "judged": True, "t_ref": ref["t"],
            "rss_ref_kib": ref["rss_kib"],
            "rss_growth_kib": last["rss_kib"] - ref["rss_kib"],
            "rss_peak_growth_kib": max(s["rss_kib"] for s in after) - ref["rss_kib"],
            "rss_anon_growth_kib": last.get("rss_anon_kib", 0) - ref.get("rss_anon_kib", 0),
            "fds_head": _median([s["fds"] for s in head]), "fds_tail": _median([s["fds"] for s in tail]),
            "threads_head": min(s["threads"] for s in head),
            "threads_tail": min(s["threads"] for s in tail),
            "own_threads_head": min(own_threads(s) for s in head),
            "own_threads_tail": min(own_threads(s) for s in tail),
            "sync_server_threads_head": min(s.get("comm", {}).get(SYNC_SERVER, 0) for s in head),
            "sync_server_threads_tail": min(s.get("comm", {}).get(SYNC_SERVER, 0) for s in tail),
        })
        names = set(ref.get("comm", {})) | set(last.get("comm", {}))
        r["threads_by_name_change"] = {n: last.get("comm", {}).get(n, 0) - ref.get("comm", {}).get(n, 0)
                                       for n in sorted(names)
                                       if last.get("comm", {}).get(n, 0) != ref.get("comm", {}).get(n, 0)}
        r["fd_growth"] = r["fds_tail"] - r["fds_head"]
        r["threads_growth"] = r["threads_tail"] - r["threads_head"]
        r["own_threads_growth"] = r["own_threads_tail"] - r["own_threads_head"]
        r["sync_server_threads_growth"] = r["sync_server_threads_tail"] - r["sync_server_threads_head"]
        r["ok"] = (r["rss_growth_kib"] <= rss_bound and r["fd_growth"] <= tol and r["own_threads_growth"] <= 0
                   and r["sync_server_threads_growth"] <= 1)
        res[key] = r
    return res


def promotions_in_logs(log_dir):
    """Promotions after a silence or an unhealthy peer, from every ftpaird log of the run:
    [(file, line)]. The operator's forced takeover on a standby is not one."""
    out = []
    for name in sorted(os.listdir(log_dir)):
        try:
            with open(os.path.join(log_dir, name), errors="replace") as f:
                for line in f:
                    if "promoted (" in line and "by the operator" not in line:
                        out.append((name, line.strip()))
        except OSError:
            pass
    return out


# ------------------------------------------------------------------- events --

def keep_logs(node=None):
    """Copies the lab's node logs (a restart truncates them) to LOG_DIR/NODE-PID.log."""
    for n in ((node,) if node else ("a", "b")):
        pid = L.node_pid(n) or SEEN_PIDS.get(n)
        if not pid:
            continue
        try:
            with open(os.path.join(L.RUN, "%s.log" % n), "rb") as f:
                data = f.read()
            with open(os.path.join(LOG_DIR, "%s-%d.log" % (n, pid)), "wb") as f:
                f.write(data)
        except OSError:
            pass


SEEN_PIDS = {}
LOG_DIR = None


class Soak:
    def __init__(self, lab, a):
        self.lab, self.a = lab, a
        self.chk = lab.checker
        # UDP may not go below RFC 4787's two minutes (the config refuses it).
        self.sets = ["--set", "flows.timeouts.udp=%d" % max(120, a.short_timeout),
                     "--set", "flows.timeouts.tcp_fin=%d" % a.short_timeout,
                     "--set", "flows.timeouts.tcp_time_wait=%d" % a.short_timeout,
                     "--set", "flows.timeouts.tcp_syn=%d" % a.short_timeout,
                     "--set", "flows.timeouts.tcp_closed=10"]
        # failover_bench's recover()/settle(): restart a node with no role, wait for the pair.
        self.bench = FB.Bench(lab, argparse.Namespace())
        self.bench.sets = self.sets
        self.state = {"active": "a"}
        self.events = []
        self.incidents = []   # the pair found broken between events (or at the end)
        self.roles = {"a": set(), "b": set()}
        self.t0 = time.monotonic()

    @property
    def active(self):
        return self.state["active"]

    def set_active(self, n):
        self.state["active"] = n
        self.bench.active = n
        self.roles[n].add("active")
        self.roles[other(n)].add("standby")

    def start_pair(self):
        self.lab.start_node("a", "--role", "active", *self.sets)
        self.lab.start_node("b", "--role", "standby", *self.sets)
        if not L.wait_until(lambda: FB.pair_ready("a"), 30, 0.2):
            raise L.LabError("the pair did not come up in sync")
        self.set_active("a")

    def ensure_pair(self, where):
        """Before each event and before the end checks: the pair as the driver left it (its
        active owns the VIPs, the other node is a standby in sync). If not (a promotion nobody
        asked for, a node gone), the incident is recorded and the pair is brought back
        (failover_bench's settle: the VIP owner stays active, the other node restarts), so one
        failure does not hide the checks that follow."""
        if L.wait_until(lambda: FB.pair_ready(self.active), 10, 0.2):
            return True
        found = {n: {"pid": L.node_pid(n), "alive": L.pid_alive(L.node_pid(n)),
                     "vip_owner": FB.m(n, "ftpair_vip_owner")} for n in ("a", "b")}
        inc = {"t": round(time.monotonic() - self.t0, 2), "where": where, "expected_active": self.active,
               "found": found}
        L.log("INCIDENT before %s: the pair is not as left (%s active): %s" % (where, self.active, found))
        keep_logs()
        try:
            self.bench.active = self.active
            self.bench.settle()
            self.set_active(self.bench.active)
            inc["settled_active"] = self.active
        except L.LabError as e:
            inc["settle_error"] = str(e)
            self.incidents.append(inc)
            raise
        self.incidents.append(inc)
        return False

    def event(self, kind, clients):
        for n in ("a", "b"):
            SEEN_PIDS[n] = L.node_pid(n) or SEEN_PIDS.get(n)
        self.ensure_pair("event %d (%s)" % (len(self.events) + 1, kind))
        for n in ("a", "b"):
            SEEN_PIDS[n] = L.node_pid(n) or SEEN_PIDS.get(n)
        old = self.active
        new = other(old)
        ev = {"kind": kind, "from": old, "to": new, "t": round(time.monotonic() - self.t0, 2), "cause": kind}
        L.log("event %d: %s of %s (-> %s)" % (len(self.events) + 1, kind, old, new))
        # Both nodes owning the VIPs at once, confirmed (x, y, x scraped in turn, all owners);
        # pairs seen in turn but not confirmed are counted apart, for the record.
        watch = L.OwnerWatch()
        ev["t0"] = time.monotonic_ns()
        took = ready = False
        try:
            if kind in ("graceful", "forced"):
                rc, doc, err = ctl(old, "switchover", *(["--force"] if kind == "forced" else []))
                ev["ctl"] = {"rc": rc, "message": (doc or {}).get("message", err),
                             "duration_ms": (doc or {}).get("duration_ms")}
            else:
                pid = L.node_pid(old)
                ev["killed_pid"] = pid
                os.kill(pid, signal.SIGKILL)
            took = bool(L.wait_until(lambda: FB.m(new, "ftpair_vip_owner") == 1, 15, 0.01))
            ev["t_owner"] = time.monotonic_ns()
            ev["takeover_s"] = round((ev["t_owner"] - ev["t0"]) / 1e9, 3)
            if took:
                self.set_active(new)
                if kind == "kill":
                    keep_logs(old)
                    L.lab("stop", old, check=False)   # clears the dead node's pidfile
                    self.lab.start_node(old, *self.sets)
                ready = bool(L.wait_until(lambda: FB.pair_ready(new), 30, 0.2))
            ev["ready_s"] = round((time.monotonic_ns() - ev["t0"]) / 1e9, 3)
        except (L.LabError, OSError, TypeError) as e:
            ev["error"] = str(e)
        finally:
            watch.stop()
        ev.update({"took_over": took, "pair_ready": ready, "two_actives_samples": len(watch.both),
                   "owner_handover_unconfirmed": watch.unconfirmed,
                   "t_ready": time.monotonic_ns()})
        # interim reports of the long-lived set and the churn, right after the event
        for c in clients:
            if c.alive():
                c.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
        lj = L.last_json("\n".join(clients[0].snapshot())) or {}
        ev["long_lived_alive"] = lj.get("alive")
        ev["long_lived_errors"] = lj.get("errors", [])
        self.events.append(ev)
        L.log("event %d: %s %s -> %s: took over %s in %ss, pair in sync %s after %ss, long-lived alive %s/%d%s" % (
            len(self.events), kind, old, new, took, ev.get("takeover_s"), ready, ev.get("ready_s"),
            ev["long_lived_alive"], self.a.conns, (", ERROR " + ev["error"]) if "error" in ev else ""))
        if not (took and ready):
            # Bring the pair back to a known state for the rest of the run.
            keep_logs()
            try:
                self.bench.settle()
                self.set_active(self.bench.active)
            except L.LabError as e:
                ev["settle_error"] = str(e)
                raise

    # -- tables
    def compare_tables(self, what, judge, attempts=5):
        """With the churn stopped: dump the active (A1), take a checkpoint, dump the standby (B),
        dump the active again (A2); judge(res, at, rc, a1, b, a2) says whether the dumps agree
        (and notes what it found in the attempt `at`). Up to `attempts` times, 2 s apart."""
        act, sb = self.active, other(self.active)
        res = {"what": what + ", whole flows (slot, proto, inside, outside, nat, state, flags)", "attempts": []}
        for i in range(attempts):
            a1, ea1 = TPS.flows_of(act)
            rc, doc, err = ctl(act, "checkpoint")
            b, eb = TPS.flows_of(sb)
            a2, ea2 = TPS.flows_of(act)
            at = {"checkpoint_rc": rc, "a1": None if a1 is None else len(a1), "b": None if b is None else len(b),
                  "a2": None if a2 is None else len(a2), "errors": [e for e in (ea1, err if rc else "", eb, ea2) if e]}
            at["ok"] = judge(res, at, rc, a1, b, a2)
            res["attempts"].append(at)
            if at["ok"]:
                break
            time.sleep(2)
        res["ok"] = bool(res["attempts"] and res["attempts"][-1]["ok"])
        res["flows"] = res["attempts"][-1].get("b")
        return res

    def compare_sandwich(self, attempts=5):
        """With the churn stopped, the active's table only loses flows (expiry); nothing is
        created and no tracked field of a live flow changes. So: dump the active (A1), take a
        checkpoint, dump the standby (B), dump the active again (A2). B is the active's table at
        some checkpoint between A1 and B, so a correct standby has A2 <= B <= A1 (as sets of
        whole flows: slot, proto, inside, outside, NAT, state, flags)."""
        def judge(res, at, rc, a1, b, a2):
            if a1 is None or b is None or a2 is None or rc != 0:
                return False
            s1, sb_, s2 = set(a1), set(b), set(a2)
            at["b_not_in_a1"] = [list(x) for x in sorted(sb_ - s1)[:10]]
            at["a2_not_in_b"] = [list(x) for x in sorted(s2 - sb_)[:10]]
            at["a2_not_in_a1"] = len(s2 - s1)
            at["expired_between"] = len(s1 - s2)
            return not (sb_ - s1) and not (s2 - sb_) and len(b) > 0
        return self.compare_tables("A2 <= B <= A1", judge, attempts)

    def compare_exact(self, attempts=5):
        """After the short flows expired the table is still: A1 == B == A2 exactly."""
        def judge(res, at, rc, a1, b, a2):
            ok = a1 is not None and rc == 0 and a1 == a2 == b and len(b) > 0
            if not ok and a1 is not None and b is not None:
                at["diff"] = [list(x) for x in sorted(set(a1) ^ set(b))[:10]]
            if ok:
                # the long-lived set is in it: established TCP to the echo port
                res["long_lived_flows"] = sum(1 for f in b if f[1] == "tcp" and f[3] == "%s:%d" % (L.SERVER_IP, ECHO_PORT)
                                              and f[5] == "established")
            return ok
        return self.compare_tables("A1 == B == A2", judge, attempts)


def wait_short_flows_gone(node, expect, timeout):
    """Until the node's flow count is down to `expect` (the long-lived set plus the stream)."""
    def down():
        n = FB.m(node, "ftpair_flows")
        return n is not None and n <= expect
    return L.wait_until(down, timeout, 1.0)


def main():
    a = A
    L.require_lab(need=())
    if not os.access(L.FTPAIRCTL, os.X_OK):
        L.skip("ftpairctl not built at %s" % L.FTPAIRCTL)
    out_dir = os.path.join(a.build, "bench")
    os.makedirs(out_dir, exist_ok=True)
    results = a.out or os.path.join(out_dir, "results.jsonl")
    sink_file = os.path.join(out_dir, "soak-udp.bin")
    global LOG_DIR
    LOG_DIR = os.path.join(out_dir, "soak-logs")
    os.makedirs(LOG_DIR, exist_ok=True)
    for f in os.listdir(LOG_DIR):
        os.remove(os.path.join(LOG_DIR, f))
    details_file = os.path.join(out_dir, "soak-details.json")
    rows = []

    def emit(name, value, unit, **params):
        rows.append({"name": name, "value": value, "unit": unit, "params": params})

    with L.LabSession(deadline_s=a.seconds + 900) as lab:
        chk = lab.checker
        lab.setup()
        s = Soak(lab, a)
        s.start_pair()
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", ECHO_PORT, "--udp"])
        if not echo.wait_line(lambda x: x.startswith("LISTENING udp"), 10):
            raise L.LabError("echo server did not start")
        sink = lab.background("server", [L.PY, FB.STREAM, "sink", "--port", STREAM_PORT, "--out", sink_file])
        if not sink.wait_line(lambda x: x.startswith("LISTENING"), 10):
            raise L.LabError("udp sink did not start")
        src = lab.background("client", [L.PY, FB.STREAM, "source", "--host", L.SERVER_IP, "--port", STREAM_PORT,
                                        "--pps", a.pps])
        longc = lab.background("client", [L.PY, L.TRAFFIC, "echo-client", "--host", L.SERVER_IP, "--port", ECHO_PORT,
                                          "--conns", a.conns, "--seconds", a.seconds + 3600,
                                          "--rate-bytes-per-s", a.conn_rate, "--op-timeout", 10, "--json"])
        line = longc.wait_line(lambda x: x.startswith("CONNECTED"), 30)
        if line != "CONNECTED %d/%d" % (a.conns, a.conns):
            raise L.LabError("long-lived connections did not all connect: %s" % line)
        churn = lab.background("client", [L.PY, CHURN, "--host", L.SERVER_IP, "--port", ECHO_PORT,
                                          "--tcp-rate", a.tcp_rate, "--udp-rate", a.udp_rate])
        L.log("traffic: %d long-lived TCP connections (%d B/s each), churn %g TCP + %g UDP flows/s, "
              "UDP stream %g pps; short-flow timeout %d s; %d s, an event every %d s"
              % (a.conns, a.conn_rate, a.tcp_rate, a.udp_rate, a.pps, a.short_timeout, a.seconds, a.event_every))
        t0 = time.monotonic()
        s.t0 = t0
        sampler = Sampler(a.sample_every, t0, s.state)
        sampler.sample_now()
        sampler.start()
        end = t0 + a.seconds
        k = 1
        aborted = None
        try:
            while True:
                t_ev = t0 + k * a.event_every
                if t_ev + 30 > end:      # the last event leaves at least 30 s of traffic
                    break
                time.sleep(max(0.0, t_ev - time.monotonic()))
                if not longc.alive() or not churn.alive():
                    raise L.LabError("a traffic generator died")
                s.event(KINDS[(k - 1) % len(KINDS)], [longc, churn])
                k += 1
            time.sleep(max(0.0, end - time.monotonic()))
        except L.LabError as e:
            aborted = str(e)
            L.log("soak aborted: %s" % e)
        t_traffic = time.monotonic() - t0
        # ---- the end: stop the churn and the stream, compare the tables, drain the long-lived set
        churn.stop(timeout=10)
        churn_res = L.last_json("\n".join(churn.snapshot())) or {}
        src.stop(timeout=5)
        time.sleep(2)
        sampler.sample_now()
        if not aborted:
            try:
                s.ensure_pair("the end checks")
            except L.LabError as e:
                aborted = "the pair could not be brought back for the end checks: %s" % e
        sandwich = s.compare_sandwich() if not aborted else {"ok": False, "what": "not run (aborted)"}
        L.log("tables at churn stop: %s flows, %s" % (sandwich.get("flows"), "equal" if sandwich["ok"] else "DIFFER"))
        exact = {"ok": False, "what": "not run (aborted)"}
        if not aborted:
            # long-lived set + the stream's flow (expires too) -> just the long-lived set
            gone = wait_short_flows_gone(s.active, a.conns, max(120, a.short_timeout) + 30)
            L.log("short flows expired: %s (active has %s flows)" % (bool(gone), FB.m(s.active, "ftpair_flows")))
            exact = s.compare_exact()
            L.log("tables after expiry: %s flows, %s" % (exact.get("flows"), "equal" if exact["ok"] else "DIFFER"))
        sampler.sample_now()
        sampler.final_smaps()
        sampler.stop()
        keep_logs()
        longc.stop(timeout=40)
        lj = L.last_json("\n".join(longc.snapshot())) or {}
        sink.stop(timeout=5)
        L.log("long-lived: %s" % {k_: lj.get(k_) for k_ in ("conns", "ok", "reset", "corrupt", "timeout",
                                                             "bytes", "max_gap_ms")})

        # ---- outages per event from the constant-rate stream
        try:
            FB.analyse(s.events, sink_file)
        except (OSError, ValueError) as e:
            L.log("stream analysis failed: %s" % e)

        # ---- process series
        ser = sampler.series()
        sres = analyse_series(ser, a.warmup, a.rss_bound_kib, a.count_tolerance)
        for key, r in sorted(sres.items()):
            if r["judged"]:
                L.log("series %s: %d samples %.0f..%.0f s, RSS %d -> ref %d -> last %d KiB (growth %+d, peak %+d), "
                      "fds %g -> %g (range %d..%d), threads %g -> %g (range %d..%d; own %d -> %d, "
                      "gRPC sync server %d -> %d)" % (
                          key, r["samples"], r["t_first"], r["t_last"], r["rss_first_kib"], r["rss_ref_kib"],
                          r["rss_last_kib"], r["rss_growth_kib"], r["rss_peak_growth_kib"], r["fds_head"],
                          r["fds_tail"], r["fds_min"], r["fds_max"], r["threads_head"], r["threads_tail"],
                          r["threads_min"], r["threads_max"], r["own_threads_head"], r["own_threads_tail"],
                          r["sync_server_threads_head"], r["sync_server_threads_tail"]))
                if r["threads_by_name_change"]:
                    L.log("series %s: threads by name, last - reference: %s" % (key, r["threads_by_name_change"]))
            else:
                L.log("series %s: %d samples %.0f..%.0f s: too short to judge (warm-up %d s + 80 s)" % (
                    key, r["samples"], r["t_first"], r["t_last"], a.warmup))

        # ---- churn failures outside event windows
        windows = [((e["t0"] / 1e9) - 1.0, (e.get("t_ready", e["t0"]) / 1e9) + 5.0) for e in s.events]
        fails = churn_res.get("fail_times", [])
        steady_fails = [f for f in fails if not any(lo <= f[0] <= hi for lo, hi in windows)]
        tcp_fail = sum(churn_res.get("tcp_failed", {}).values())
        udp_fail = sum(churn_res.get("udp_failed", {}).values())

        # ---- promotions nobody asked for: every kill makes the standby promote once, nothing else
        promos = promotions_in_logs(LOG_DIR)
        kills_taken = sum(1 for e in s.events if e["kind"] == "kill" and e["took_over"])
        spurious = len(promos) - kills_taken

        # ---- assertions
        by_kind = {kd: [e for e in s.events if e["kind"] == kd] for kd in KINDS}
        n_ev = len(s.events)
        chk.check("soak ran %d s with %d events (%s)" % (round(t_traffic), n_ev,
                                                        ", ".join("%d %s" % (len(v), kd) for kd, v in by_kind.items())),
                  not aborted and n_ev >= 1 and round(t_traffic) >= a.seconds - 1, aborted or "")
        bad = [e for e in s.events if not (e["took_over"] and e["pair_ready"])]
        chk.check("every event: the peer took over and the pair was back in sync", not bad,
                  "; ".join("%s at %.0f s: %s" % (e["kind"], e["t"], e.get("error") or e.get("ctl")) for e in bad))
        two = [e for e in s.events if e["two_actives_samples"]]
        chk.check("never two actives during the events", not two,
                  "; ".join("%s of %s at %.0f s: %d confirmed samples (%d unconfirmed)" % (
                      e["kind"], e.get("from", "?"), e["t"], e["two_actives_samples"], e["owner_handover_unconfirmed"])
                      for e in two))
        chk.check("the pair was as left before every event and at the end (no incident)", not s.incidents,
                  json.dumps(s.incidents))
        chk.check("no spurious failover: one promotion per kill, none otherwise (node logs)", spurious == 0,
                  "%d promotions for %d kills: %s" % (len(promos), kills_taken, promos))
        survived = lj.get("ok", 0)
        chk.check("all %d long-lived connections survived, every byte checked" % a.conns,
                  survived == a.conns and lj.get("reset", 0) == 0 and lj.get("corrupt", 0) == 0,
                  json.dumps({k_: lj.get(k_) for k_ in ("ok", "reset", "corrupt", "timeout", "errors")}))
        judged = [r for r in sres.values() if r["judged"]]
        chk.check("every ftpaird process series long enough to judge: %d of %d" % (len(judged), len(sres)),
                  len(judged) >= 2)
        rss_max = max((r["rss_growth_kib"] for r in judged), default=None)
        fd_max = max((r["fd_growth"] for r in judged), default=None)
        thr_max = max((r["own_threads_growth"] for r in judged), default=None)
        sync_max = max((r["sync_server_threads_growth"] for r in judged), default=None)
        all_thr_max = max((r["threads_growth"] for r in judged), default=None)
        chk.check("RSS growth per process (last - after %d s warm-up) <= %d KiB" % (a.warmup, a.rss_bound_kib),
                  judged and all(r["rss_growth_kib"] <= a.rss_bound_kib for r in judged),
                  "max %s KiB" % rss_max)
        chk.check("open fds flat per process (median of the last 40 s at most %d above the 40 s after warm-up)"
                  % a.count_tolerance,
                  judged and all(r["fd_growth"] <= a.count_tolerance for r in judged), "max growth %s" % fd_max)
        chk.check("the daemon's own threads flat per process (floor of the last 40 s equal to the 40 s after warm-up)",
                  judged and all(r["own_threads_growth"] <= 0 for r in judged), "max growth %s" % thr_max)
        chk.check("gRPC sync-server threads: floor grows by at most 1 (no handler left behind by a role change)",
                  judged and all(r["sync_server_threads_growth"] <= 1 for r in judged),
                  "max growth %s; all threads (gRPC pools included) max growth %s" % (sync_max, all_thr_max))
        chk.check("churn: no flow failed outside an event window (1 s before to 5 s after the pair is in sync)",
                  churn_res and not steady_fails,
                  "%d TCP of %s and %d UDP of %s failed in all; outside events: %s" % (
                      tcp_fail, churn_res.get("tcp_started"), udp_fail, churn_res.get("udp_started"),
                      steady_fails[:10]))
        chk.check("flow tables at churn stop: standby consistent with the active (%s)" % sandwich["what"],
                  sandwich["ok"], json.dumps(sandwich.get("attempts", [])[-1:]))
        chk.check("flow tables after the short flows expired: equal (%s), long-lived set present" % exact["what"],
                  exact["ok"] and exact.get("long_lived_flows") == a.conns,
                  "flows %s, long-lived %s; %s" % (exact.get("flows"), exact.get("long_lived_flows"),
                                                    json.dumps(exact.get("attempts", [])[-1:])))
        for n in ("a", "b"):
            chk.check("node %s took the roles active and standby" % n, s.roles[n] >= {"active", "standby"},
                      str(sorted(s.roles[n])))

        # ---- figures
        emit("soak_seconds", round(t_traffic), "s", event_every_s=a.event_every)
        emit("soak_events", n_ev, "events", **{kd: len(v) for kd, v in by_kind.items()})
        emit("soak_spurious_failovers", spurious, "failovers", promotions=len(promos), kills=kills_taken)
        emit("soak_connections_survived_ratio", round(survived / a.conns, 4), "ratio", conns=a.conns,
             bytes=lj.get("bytes"))
        sp = {"series": len(judged), "warmup_s": a.warmup}
        if rss_max is not None:
            emit("soak_rss_growth_kib_max", rss_max, "KiB", bound_kib=a.rss_bound_kib, **sp)
            emit("soak_rss_peak_growth_kib_max", max(r["rss_peak_growth_kib"] for r in judged), "KiB", **sp)
            emit("soak_rss_kib_max", max(r["rss_last_kib"] for r in judged), "KiB", **sp)
            emit("soak_fd_growth_max", fd_max, "fds", tolerance=a.count_tolerance, **sp)
            emit("soak_threads_growth_max", thr_max, "threads", tolerance=0, threads="own (not gRPC's pools)", **sp)
            emit("soak_grpc_sync_server_threads_growth_max", sync_max, "threads", tolerance=1, **sp)
            emit("soak_all_threads_growth_max", all_thr_max, "threads", **sp)
        emit("soak_tables_equal", 1 if sandwich["ok"] and exact["ok"] else 0, "bool",
             flows_at_churn_stop=sandwich.get("flows"), flows_after_expiry=exact.get("flows"),
             fields="slot,proto,inside,outside,nat,state,flags")
        if churn_res:
            emit("soak_churn_tcp_ok_ratio", round(churn_res["tcp_ok"] / max(1, churn_res["tcp_started"]), 5), "ratio",
                 started=churn_res["tcp_started"], rate=a.tcp_rate)
            emit("soak_churn_udp_ok_ratio", round(churn_res["udp_ok"] / max(1, churn_res["udp_started"]), 5), "ratio",
                 started=churn_res["udp_started"], rate=a.udp_rate)
        for kd, evs in by_kind.items():
            fo = [e["failover_ms"] for e in evs if e.get("failover_ms") is not None]
            if fo:
                emit("soak_outage_ms_p50", round(statistics.median(fo), 2), "ms", cause=kd, events=len(fo))
                emit("soak_outage_ms_max", round(max(fo), 2), "ms", cause=kd, events=len(fo))
            rd = [e["ready_s"] for e in evs if e.get("ready_s") is not None]
            if rd:
                emit("soak_back_in_sync_s_max", max(rd), "s", cause=kd, events=len(rd))
        with open(results, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with open(details_file, "w") as f:
            json.dump({"args": vars(a), "events": s.events, "churn": churn_res, "long_lived": lj,
                       "series": sres, "samples": sampler.samples, "smaps": sampler.smaps, "tables": {"churn_stop": sandwich, "after_expiry": exact},
                       "roles": {n: sorted(v) for n, v in s.roles.items()}, "incidents": s.incidents}, f, indent=1, default=str)
        try:
            os.remove(sink_file)
        except OSError:
            pass

        # ---- summary
        print("---- soak summary ----")
        print("traffic %d s; events %d: %s" % (round(t_traffic), n_ev, ", ".join(
            "%d %s" % (len(v), kd) for kd, v in by_kind.items())))
        for e in s.events:
            print("  %5.0f s %-8s %s->%s took over in %.3f s, in sync after %.1f s, outage %s ms, stream lost %s, "
                  "long-lived alive %s" % (e["t"], e["kind"], e["from"], e["to"], e.get("takeover_s") or -1,
                                           e.get("ready_s") or -1, None if e.get("failover_ms") is None
                                           else round(e["failover_ms"], 1), e.get("lost"), e.get("long_lived_alive")))
        print("promotions after a silence/unhealthy peer: %d for %d kills" % (len(promos), kills_taken))
        for p_ in promos:
            print("  %s: %s" % p_)
        print("long-lived: %s/%d survived, %s bytes checked" % (survived, a.conns, lj.get("bytes")))
        print("churn: TCP %s/%s ok, UDP %s/%s ok (failures by reason: TCP %s, UDP %s)" % (
            churn_res.get("tcp_ok"), churn_res.get("tcp_started"), churn_res.get("udp_ok"),
            churn_res.get("udp_started"), churn_res.get("tcp_failed"), churn_res.get("udp_failed")))
        print("tables: at churn stop %s flows (%s); after expiry %s flows (%s)" % (
            sandwich.get("flows"), "ok" if sandwich["ok"] else "FAIL", exact.get("flows"),
            "ok" if exact["ok"] else "FAIL"))
        print("process series: RSS growth max %s KiB (bound %d), fd growth max %s (bound %d), own threads growth "
              "max %s (bound 0), gRPC sync-server threads %s (bound 1), all threads %s"
              % (rss_max, a.rss_bound_kib, fd_max, a.count_tolerance, thr_max, sync_max, all_thr_max))
        print("results: %s; details: %s; node logs: %s" % (results, details_file, LOG_DIR))
        for r in rows:
            print(json.dumps(r))
        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s.log ----\n%s----" % (n, L.node_log_tail(n)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
