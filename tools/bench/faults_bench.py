#!/usr/bin/python3
"""The management-network fault matrix (issue 16): the pair lab at the lab config's default
timers (5 ms beats, 8 missed = 40 ms of silence), one fault at a time on the link between the
nodes (tools/lab/faults.py).

  faults_bench.py [--faults SPEC,...] [--seconds 60] [--kills 3] [--conns 8] [--out FILE]

Per fault:
  1. window: a in sync pair, 8 byte-checked echo connections through the active, the fault
     applied for --seconds (env FAULTS_SECONDS). Both nodes' /metrics are polled in turn all
     along (rounds a, b, a then b, a, b; ~20-40 ms a round). Two actives: a round in which the
     first node owned the VIPs before and after the second was seen owning them. No active:
     each node's ownership is a step function through its scrapes (a change placed halfway
     between the two scrapes that show it, a node that does not answer owns nothing), and no
     active is where neither is 1; its resolution is the spacing of one node's scrapes, ~10-20
     ms. Every failover counted by a node (ftpair_failovers_total, summed over its
     incarnations) is spurious: nothing failed but the link. A node that the fault got fenced
     is restarted at once, as a standby (--role standby), the fault still on.
  2. kills: --kills times, the fault is cleared, the pair brought back in sync, the fault
     applied again (relative to the roles then), 2 s of settling with echo connections, then
     SIGKILL of the active. The failover time runs from the kill to the first packet the new
     active forwards (its counters polled every ~2 ms). A kill is taken only if, at that moment,
     the pair still has an active and a standby in sync; otherwise it is recorded as not taken
     (the fault itself failed the pair over).

Fault specs are faults.py's, plus oneway:to_standby and oneway:to_active, resolved against the
roles when applied. The default list: none, loss:1, loss:5, loss:20, jitter:5:5, reorder-dup:10:10,
oneway:to_standby, oneway:to_active, flap:1:1, throttle:1mbit.

Writes JSON lines {"name","value","unit","params"} to --out (appends). Needs root and the lab
(takes the lab lock like the lab tests).
"""

import argparse
import atexit
import json
import os
import random
import re
import shutil
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "lab"))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))
import labutil as L  # noqa: E402
import faults as F  # noqa: E402

DEFAULT_FAULTS = ("none,loss:1,loss:5,loss:20,jitter:5:5,reorder-dup:10:10,oneway:to_standby,"
                  "oneway:to_active,flap:1:1,throttle:1mbit")
ECHO_PORT = 7000
SETTLE_S = 2.0
FLAP_KILL_AT_S = 0.5     # flap: the kill falls in the first up second
TAKEOVER_WAIT_S = 3.0

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_OWNER = re.compile(rb"^ftpair_vip_owner (\S+)\s*$", re.M)
_FAILOVERS = re.compile(rb"^ftpair_failovers_total\{[^}]*\} (\S+)\s*$", re.M)


def other(n):
    return "b" if n == "a" else "a"


def quick(node, timeout=0.5):
    """(vip_owner, failovers summed over reasons) from a node's /metrics, or None."""
    try:
        with _opener.open(L.metrics_url(node), timeout=timeout) as r:
            text = r.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    m = _OWNER.search(text)
    if not m:
        return None
    return float(m.group(1)), sum(float(v) for v in _FAILOVERS.findall(text))


def node_alive(node):
    pid = L.node_pid(node)
    return bool(pid) and L.pid_alive(pid)


def m(node, name, **labels):
    s = L.scrape(node, timeout=1.0)
    return None if s is None else L.metric(s, name, **labels)


def is_owner(node):
    return m(node, "ftpair_vip_owner") == 1


def standby_ready(node):
    return m(node, "ftpair_role", state="STANDBY_READY") == 1


# ------------------------------------------------------------------ watch --

class PairWatch:
    """Polls both nodes in rounds (x, y, x; x alternating) until stop().

    Two actives: a round where x, y and x again all own the VIPs (x owned them before and
    after y was seen owning them: a real overlap, never a clean hand-over between two
    scrapes). No active: each node's ownership is a step function through its scrapes (a
    change placed halfway between the two scrapes that show it; a node that does not answer
    and whose process is gone, or that was just killed, owns nothing; a live node that does
    not answer tells nothing); no active is where neither function is 1."""

    def __init__(self, period=0.015):
        self.period = period
        self.rounds = 0
        self.double, self.double_unconfirmed = [], 0
        self.samples = {"a": [], "b": []}     # (t, 0 or 1)
        self.killed = set()                   # nodes this bench has just SIGKILLed
        self._fo = {"a": [0.0, None], "b": [0.0, None]}   # counted, last value seen
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _count_failovers(self, node, r):
        if r is None:
            return
        acc, v = self._fo[node], r[1]
        if acc[1] is not None:
            # a lower value: a new incarnation of the node, counting from 0
            acc[0] += v - acc[1] if v >= acc[1] else v
        acc[1] = v

    def failovers(self):
        return sum(acc[0] for acc in self._fo.values())

    def _scrape(self, node):
        t0 = time.monotonic()
        r = quick(node)
        t = (t0 + time.monotonic()) / 2
        if r is None:
            # No answer: a node whose process is gone (or that this bench killed) owns nothing;
            # a live one that does not answer within 0.5 s (its scrape queued behind a
            # throttled link) tells nothing.
            own = False if (node in self.killed or not node_alive(node)) else None
        else:
            own = r[0] == 1
            self._count_failovers(node, r)
        if own is not None:
            self.samples[node].append((t, 1 if own else 0))
        return own

    def _run(self):
        x = "a"
        while not self._stop.is_set():
            o1 = self._scrape(x)
            o2 = self._scrape(other(x))
            o3 = self._scrape(x)
            self.rounds += 1
            if o1 and o2:
                if o3:
                    self.double.append(time.monotonic())
                else:
                    self.double_unconfirmed += 1
            x = other(x)
            self._stop.wait(self.period)

    @staticmethod
    def _steps(samples):
        """[(t_change, value)]: value from t_change on (changes halfway between scrapes)."""
        out = []
        for i, (t, v) in enumerate(samples):
            if not out:
                out.append((t, v))
            elif v != out[-1][1]:
                out.append(((samples[i - 1][0] + t) / 2, v))
        return out

    def none_stretches(self):
        sa, sb = self.samples["a"], self.samples["b"]
        if not sa or not sb:
            return []
        lo, hi = max(sa[0][0], sb[0][0]), min(sa[-1][0], sb[-1][0])
        steps = {"a": self._steps(sa), "b": self._steps(sb)}
        points = sorted(set([lo, hi] + [t for n in steps for t, _ in steps[n] if lo < t < hi]))
        idx, cur = {"a": 0, "b": 0}, {}
        stretches, start = [], None
        for t in points:
            for n in ("a", "b"):
                st = steps[n]
                while idx[n] < len(st) and st[idx[n]][0] <= t:
                    cur[n] = st[idx[n]][1]
                    idx[n] += 1
            none = not cur.get("a") and not cur.get("b")
            if none and start is None and t < hi:
                start = t
            elif not none and start is not None:
                stretches.append((start, t))
                start = None
        if start is not None:
            stretches.append((start, hi))
        return stretches

    def stop(self):
        self._stop.set()
        self._t.join(3)
        elapsed = time.monotonic() - self._t0
        ns = self.none_stretches()
        return {"rounds": self.rounds, "round_ms": round(1000 * elapsed / max(1, self.rounds), 1),
                "double_samples": len(self.double), "double_unconfirmed": self.double_unconfirmed,
                # confirmed two-owner rounds, each worth one round period
                "double_active_s": round(len(self.double) * elapsed / max(1, self.rounds), 3),
                "no_active_s": round(sum(e - s for s, e in ns), 3),
                "no_active_max_ms": round(1000 * max((e - s for s, e in ns), default=0.0), 1),
                "no_active_stretches": len(ns), "failovers": self.failovers()}


# --------------------------------------------------------------- the pair --

def pin_daemon():
    """Runs the whole matrix on one build: a copy of ftpaird in RUN (ftpair-lab takes FTPAIRD
    from the environment). A rebuild in the tree meanwhile (the binary missing for the seconds
    of a link) then fails no restart. Returns (source, copy, source mtime)."""
    src = os.environ.get("FTPAIRD", L.FTPAIRD)
    dst = os.path.join(L.RUN, "faults-ftpaird")
    shutil.copy2(src, dst)
    atexit.register(lambda: os.path.exists(dst) and os.unlink(dst))
    os.environ["FTPAIRD"] = dst
    return src, dst, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(os.stat(src).st_mtime))

def keep_log(node):
    """A restart truncates the node's log: append it to RUN/faults-NODE.log first."""
    try:
        with open(os.path.join(L.RUN, "%s.log" % node), errors="replace") as f:
            text = f.read()
        with open(os.path.join(L.RUN, "faults-%s.log" % node), "a") as f:
            f.write("==== %s.log before a restart at %s ====\n%s" % (node, time.strftime("%H:%M:%S"), text))
    except OSError:
        pass


class Pair:
    def __init__(self, lab, log=L.log):
        self.lab = lab
        self.log = log
        self.restarts = 0

    def start_fresh(self):
        F.clear()
        for n in ("a", "b"):
            L.lab("stop", n, check=False)
            keep_log(n)
        self.lab.start_node("a", "--role", "active")
        self.lab.start_node("b", "--role", "standby")
        if not L.wait_until(lambda: self.ready("a"), 30, 0.2):
            raise L.LabError("the pair did not come up in sync")
        return "a"

    @staticmethod
    def ready(active):
        return (is_owner(active) and m(active, "ftpair_replication_in_sync") == 1
                and standby_ready(other(active)) and not is_owner(other(active)))

    def active(self):
        owners = [n for n in ("a", "b") if is_owner(n)]
        return owners[0] if len(owners) == 1 else None

    def restart_standby(self, node):
        L.lab("stop", node, check=False)
        keep_log(node)
        self.restarts += 1
        self.lab.start_node(node, "--role", "standby", timeout=40)

    def ensure(self, timeout=25):
        """A pair in sync (one active, the other STANDBY_READY); returns the active."""
        act = self.active()
        if act is None:
            self.log("pair: no single active: starting afresh")
            return self.start_fresh()
        sb = other(act)
        if not node_alive(sb):
            self.restart_standby(sb)
        if L.wait_until(lambda: self.ready(act), timeout, 0.2):
            return act
        self.log("pair: %s not in sync after %d s: restarting it" % (sb, timeout))
        self.restart_standby(sb)
        if L.wait_until(lambda: self.ready(act), timeout, 0.2):
            return act
        self.log("pair: still not in sync: starting afresh")
        return self.start_fresh()


def resolve(spec, active):
    """oneway:to_standby / oneway:to_active against the current roles."""
    if spec == "oneway:to_standby":
        return "oneway:%s>%s" % (active, other(active))
    if spec == "oneway:to_active":
        return "oneway:%s>%s" % (other(active), active)
    return spec


_FORWARDED = re.compile(rb'^ftpair_forwarded_packets_total\{[^}]*port="(?:inside|outside)"[^}]*\} (\S+)\s*$', re.M)


def forwarded(node):
    """(packets forwarded on both ports, vip_owner), or (None, None)."""
    try:
        with _opener.open(L.metrics_url(node), timeout=0.5) as r:
            text = r.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None, None
    own = _OWNER.search(text)
    return sum(float(v) for v in _FORWARDED.findall(text)), (float(own.group(1)) if own else None)


_PROMOTED = re.compile(r"promoted \((.*)\): fenced in ([0-9.]+) ms, active ([0-9.]+) ms after the decision")
_SILENCE = re.compile(r"missed heartbeats for (\d+) ms")


def promotions(node):
    """[(reason, fence_ms, promote_ms)] from the node's log (this incarnation's)."""
    out = []
    try:
        with open(os.path.join(L.RUN, "%s.log" % node), errors="replace") as f:
            for line in f:
                mm = _PROMOTED.search(line)
                if mm:
                    out.append((mm.group(1), float(mm.group(2)), float(mm.group(3))))
    except OSError:
        pass
    return out


def first_forward_after(node, t0, base, timeout):
    """Seconds from t0 until node owns the VIPs and its forwarded counter rose past base."""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        v, owner = forwarded(node)
        if v is not None and owner == 1 and v > base:
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


# ----------------------------------------------------------------- phases --

def window(lab, pair, spec, seconds, conns):
    """Phase 1. Returns a dict of figures."""
    act = pair.ensure()
    applied = resolve(spec, act)
    c = L.start_client(lab, conns, seconds)
    time.sleep(1.0)
    restarts0 = pair.restarts
    watch = PairWatch()
    t_end = time.monotonic() + seconds
    with F.inject(applied) as desc:
        L.log("fault %s (%s): %s, %d s" % (spec, applied, desc, seconds))
        while time.monotonic() < t_end:
            for n in ("a", "b"):
                if not node_alive(n) and time.monotonic() < t_end - 1:
                    L.log("  %s is gone (fenced?): restarting it as standby under the fault" % n)
                    try:
                        pair.restart_standby(n)
                    except L.LabError as e:
                        L.log("  restart of %s failed: %s" % (n, " | ".join(str(e).splitlines()[-4:])))
            time.sleep(0.2)
        evidence = F.counters()
    w = watch.stop()
    j = (L.client_result(c, 30) or {})
    w.update({"fault": spec, "applied": applied, "seconds": seconds, "restarts": pair.restarts - restarts0,
              "evidence": evidence,
              "conns": j.get("conns", conns), "ok": j.get("ok", 0), "client": j})
    L.log("  window %s: failovers %g, two actives %d (unconfirmed %d), no active %.3f s "
          "(max %.1f ms, %d stretches), rounds %d (%.1f ms), connections %d/%d, restarts %d" % (
              spec, w["failovers"], w["double_samples"], w["double_unconfirmed"],
              w["no_active_s"], w["no_active_max_ms"], w["no_active_stretches"], w["rounds"], w["round_ms"],
              w["ok"], w["conns"], w["restarts"]))
    L.log("  the fault did: %s; load average %s" % (json.dumps(evidence), open("/proc/loadavg").read().strip()))
    return w


def kill_once(lab, pair, spec, conns=8):
    """Phase 2, one kill. Returns a dict (failover_s None: no takeover within the wait;
    taken False: the pair was not intact when the kill was due)."""
    F.clear()
    act = pair.ensure()
    applied = resolve(spec, act)
    new = other(act)
    c = L.start_client(lab, conns, 6)
    time.sleep(1.0)
    watch = PairWatch()
    res = {"fault": spec, "applied": applied, "old": act, "taken": False, "failover_s": None}
    j = {}
    try:
        with F.inject(applied):
            time.sleep(FLAP_KILL_AT_S if spec.startswith("flap") else SETTLE_S + random.uniform(0, 0.5))
            intact = node_alive(act) and node_alive(new) and is_owner(act) and standby_ready(new) \
                and not is_owner(new)
            if intact:
                base, _ = forwarded(new)
                promo0 = len(promotions(new))
                pid = L.node_pid(act)
                t0 = time.monotonic()
                watch.killed.add(act)
                os.kill(pid, 9)
                res["taken"] = True
                res["failover_s"] = first_forward_after(new, t0, base or 0.0, TAKEOVER_WAIT_S)
                time.sleep(0.5)
                promo = promotions(new)[promo0:]
                if promo:
                    reason, fence_ms, promote_ms = promo[0]
                    sil = _SILENCE.search(reason)
                    res.update({"reason": reason, "fence_ms": fence_ms, "promote_ms": promote_ms,
                                "detect_ms": float(sil.group(1)) if sil else None})
            else:
                res["why_not"] = "pair not intact at the kill: %s owner %s alive %s, %s ready %s alive %s" % (
                    act, is_owner(act), node_alive(act), new, standby_ready(new), node_alive(new))
            j = (L.client_result(c, 30) or {})
    finally:
        w = watch.stop()
    res.update({"conns": j.get("conns", conns), "ok": j.get("ok", 0), "watch": w})
    L.log("  kill %s (%s): %s" % (spec, applied, "not taken: " + res["why_not"] if not res["taken"] else
                                  "failover %s ms (%s), connections %d/%d, two actives %d, no active max %.1f ms" % (
                                      None if res["failover_s"] is None else round(res["failover_s"] * 1000, 1),
                                      res.get("reason"),
                                      res["ok"], res["conns"], w["double_samples"], w["no_active_max_ms"])))
    return res


def run_fault(lab, pair, spec, seconds, kills, conns, emit):
    w = window(lab, pair, spec, seconds, conns)
    ks = [kill_once(lab, pair, spec) for _ in range(kills)]
    F.clear()
    taken = [k for k in ks if k["taken"]]
    fo = [k["failover_s"] * 1000 for k in taken if k["failover_s"] is not None]
    p = {"fault": spec}
    emit("spurious_failovers", w["failovers"], "failovers", fault=spec, seconds=seconds)
    emit("double_active_seconds", w["double_active_s"], "s", fault=spec, phase="window")
    emit("no_active_seconds", w["no_active_s"], "s", fault=spec, phase="window")
    emit("no_active_max_ms", w["no_active_max_ms"], "ms", fault=spec, phase="window")
    emit("connections_survived_ratio", round(w["ok"] / w["conns"], 4) if w["conns"] else 0, "ratio",
         fault=spec, phase="window")
    if ks:
        kw = [k["watch"] for k in ks]
        emit("double_active_seconds", round(sum(x["double_active_s"] for x in kw), 3), "s", fault=spec, phase="kills")
        emit("no_active_seconds", round(sum(x["no_active_s"] for x in kw), 3), "s", fault=spec, phase="kills")
        emit("no_active_max_ms", max(x["no_active_max_ms"] for x in kw), "ms", fault=spec, phase="kills")
        emit("kills_taken", len(taken), "kills", fault=spec, runs=len(ks))
        if taken:
            emit("failover_missed", len(taken) - len(fo), "kills", cause="kill", **p)
            conns = sum(k["conns"] for k in taken)
            emit("connections_survived_ratio", round(sum(k["ok"] for k in taken) / conns, 4) if conns else 0,
                 "ratio", cause="kill", **p)
        det = [k["detect_ms"] for k in taken if k.get("detect_ms") is not None]
        if det:
            emit("failover_detect_ms_p50", statistics.median(det), "ms", cause="kill", runs=len(det), **p)
            emit("failover_detect_ms_max", max(det), "ms", cause="kill", runs=len(det), **p)
        fence = [k["fence_ms"] for k in taken if k.get("fence_ms") is not None]
        if fence:
            emit("failover_fence_ms_p50", statistics.median(fence), "ms", cause="kill", runs=len(fence), **p)
            emit("failover_promote_ms_p50", statistics.median(k["promote_ms"] for k in taken if k.get("promote_ms")
                                                              is not None), "ms", cause="kill", runs=len(fence), **p)
        if fo:
            emit("failover_ms_p50", round(statistics.median(fo), 2), "ms", cause="kill", runs=len(fo), **p)
            emit("failover_ms_max", round(max(fo), 2), "ms", cause="kill", runs=len(fo), **p)
    return w, ks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--faults", default=os.environ.get("FAULTS", DEFAULT_FAULTS))
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FAULTS_SECONDS", "60")))
    ap.add_argument("--kills", type=int, default=int(os.environ.get("FAULTS_KILLS", "3")))
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    specs = [s for s in a.faults.split(",") if s]
    for s in specs:
        F.parse(resolve(s, "a"))
    L.require_lab(need=("nft", "tc"))
    rows, runs = [], []

    def emit(name, value, unit, **params):
        rows.append({"name": name, "value": value, "unit": unit, "params": params})

    per_fault = a.seconds + a.kills * 30 + 30
    with L.LabSession(deadline_s=120 + per_fault * len(specs)) as lab:
        lab.setup()
        for n in ("a", "b"):
            try:
                os.unlink(os.path.join(L.RUN, "faults-%s.log" % n))
            except OSError:
                pass
        src, dst, mtime = pin_daemon()
        L.log("ftpaird: %s (built %s UTC), run from a copy at %s" % (src, mtime, dst))
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", ECHO_PORT])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)
        pair = Pair(lab)
        pair.start_fresh()
        try:
            for spec in specs:
                w, ks = run_fault(lab, pair, spec, a.seconds, a.kills, a.conns, emit)
                runs.append({"window": w, "kills": ks})
                with open(os.path.join(L.RUN, "faults-bench-runs.json"), "w") as f:
                    json.dump(runs, f, indent=1, default=str)
        finally:
            F.clear()
        if a.out:
            with open(a.out, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        for r in rows:
            print(json.dumps(r))
        lab.checker.check("every fault ran", len(runs) == len(specs))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
