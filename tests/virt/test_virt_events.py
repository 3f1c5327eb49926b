#!/usr/bin/python3
"""ftpaird's failover on libvirt lifecycle events (issue 6 item 8), against a real libvirtd.

The whole daemon runs, not a stand-in: two ftpairds (a active, b standby) in a network namespace
of the test's own (ports: af_packet on veth ends; management on the namespace's loopback),
and b fences with libvirt and subscribes to lifecycle events. The active's VM is modelled by a
TCG domain (ftve-a) that the test destroys: a real pair runs ftpaird inside that domain, here the
process runs beside it, which lets the test tell the two signals apart:
  - ftve-a destroyed while a still beats: only the event can promote b (reason peer_domain_event);
  - events of another domain (ftve-other), and a pause/resume of the peer, promote nothing;
  - the figure: ftve-a's qemu and a's process killed at once (a VM dying), b promoted by the event
    vs. with failover.libvirt_events=false (K missed beats), each the time from the kill to b's
    "is ACTIVE" line; printed as JSON lines (FTPAIR_EVENTS_REPS, default 1, rounds of each);
  - an unreachable libvirt URI for events: a clear message, counted, retried, and b's start is
    not held up by it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import virtutil as V

V.require()
FTPAIRD = os.environ.get("FTPAIRD", os.path.join(os.path.dirname(os.path.dirname(V.FTPAIR_VIRT)), "control", "ftpaird"))
if not os.path.exists(FTPAIRD):
    print("FAIL: %s not built" % FTPAIRD)
    sys.exit(1)
NS = "ftve-ns"
REPS = int(os.environ.get("FTPAIR_EVENTS_REPS", "1"))
IP = {"a": "127.0.0.1", "b": "127.0.0.2"}
BLACKHOLE = "198.19.254.1"  # routed into a dummy interface: a TCP connect there never completes

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_]+)="([^"]*)"')


def metrics(node):
    p = subprocess.run(["ip", "netns", "exec", NS, "curl", "-s", "-m", "2", "http://%s:9108/metrics" % IP[node]],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        return None
    out = {}
    for line in p.stdout.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[(m.group(1), tuple(sorted(_LABEL.findall(m.group(2) or ""))))] = float(m.group(3))
    return out


def metric(m, name, **labels):
    return (m or {}).get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(fn, timeout, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    return fn()


class Node:
    """One ftpaird in the namespace; its log lines are kept with the time each was read."""

    def __init__(self, s, name, role, failover, overrides=()):
        self.name = name
        state = os.path.join(s.dir, "state-" + name)
        os.makedirs(state, exist_ok=True)
        peer = "b" if name == "a" else "a"
        cfg = os.path.join(s.dir, name + ".yaml")
        with open(cfg, "w") as f:
            f.write("node: {id: %s, state_dir: %s, role: %s}\n" % (name, state, role) +
                    "dpdk: {memory_mb: 128, mbufs: 4095, file_prefix: ftve-%s}\n" % name +
                    "ports:\n"
                    "  inside: {device: \"net_af_packet0,iface=lan-%s,qdisc_bypass=0\", vip: 198.18.1.1/24, vmac_id: 1}\n"
                    "  outside: {device: \"net_af_packet1,iface=wan-%s,qdisc_bypass=0\", vip: 198.18.2.1/24, vmac_id: 2}\n"
                    % (name, name) +
                    "management: {metrics: \"%s:9108\", grpc: \"%s:50051\"}\n" % (IP[name], IP[name]) +
                    "peer: {grpc: \"%s:50051\"}\n" % IP[peer] +
                    "failover:\n" + "".join("  %s: %s\n" % kv for kv in failover.items()))
        args = ["ip", "netns", "exec", NS, FTPAIRD, "--config", cfg]
        for o in overrides:
            args += ["--set", o]
        self.t_start = time.monotonic()
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.mu = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            with self.mu:
                self.lines.append((time.monotonic(), line.rstrip()))

    def find(self, needle, after=0.0):
        with self.mu:
            for t, l in self.lines:
                if t >= after and needle in l:
                    return t, l
        return None

    def wait_line(self, needle, timeout, after=0.0):
        return wait_until(lambda: self.find(needle, after), timeout, 0.002)

    def role(self):
        m = metrics(self.name)
        for st in ("ACTIVE", "STANDBY_READY", "STANDBY_SYNCING", "BOOT", "DRAINING", "FAULT"):
            if metric(m, "ftpair_role", state=st) == 1:
                return st
        return None

    def log(self):
        with self.mu:
            return "\n".join(l for _, l in self.lines[-25:])

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def sh(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


def ns_setup(s):
    sh("ip", "netns", "del", NS)  # a leftover from an interrupted run
    subprocess.run(["ip", "netns", "add", NS], check=True)
    s.on_exit.append(["ip", "netns", "del", NS])
    # veth pairs (no dummy driver in every container): DPDK's af_packet ports on one end each.
    cmds = [["ip", "link", "set", "lo", "up"]]
    for dev in ("lan-a", "wan-a", "lan-b", "wan-b", "hole"):
        cmds += [["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "-p"],
                 ["ip", "link", "set", dev, "up"], ["ip", "link", "set", dev + "-p", "up"]]
    # The blackhole: a neighbour that never answers, so a TCP connect there hangs.
    cmds += [["ip", "route", "add", BLACKHOLE + "/32", "dev", "hole"],
             ["ip", "neigh", "add", BLACKHOLE, "lladdr", "02:00:00:00:00:01", "dev", "hole", "nud", "permanent"]]
    for cmd in cmds:
        subprocess.run(["ip", "netns", "exec", NS] + cmd, check=True)


def make_domain(s, name):
    img = os.path.join(s.dir, name + ".img")
    if not os.path.exists(img):
        s.make_image(name + ".img")
    xml = ("<domain type='qemu'><name>%s</name><memory unit='MiB'>32</memory><os><type arch='x86_64' "
           "machine='pc'>hvm</type></os><devices><disk type='file' device='disk'><source file='%s'/>"
           "<target dev='vda' bus='virtio'/><readonly/></disk></devices></domain>" % (name, img))
    path = os.path.join(s.dir, name + ".xml")
    with open(path, "w") as f:
        f.write(xml)
    p = s.virsh("create", path)
    if p.returncode != 0:
        raise RuntimeError("virsh create %s: %s" % (name, p.stderr.strip()))


LIBVIRT_B = {"fence": "libvirt", "libvirt_uri": V.URI, "libvirt_domain": "ftve-a", "fence_timeout_ms": 5000}
PROCESS_A = {"fence": "process", "fence_pidfile": "/nonexistent/ftve-b.pid"}


def start_pair(s, b_failover, b_overrides=()):
    a = Node(s, "a", "active", PROCESS_A)
    if not a.wait_line("is ACTIVE", 30):
        a.stop()
        raise RuntimeError("node a did not become active:\n" + a.log())
    b = Node(s, "b", "standby", b_failover, b_overrides)
    return a, b


def stop_pair(*nodes):
    for n in nodes:
        n.stop()


def ready(b, timeout=30):
    return wait_until(lambda: b.role() == "STANDBY_READY", timeout, 0.1)


with V.VirtSession(prefix="ftve") as s:
    ns_setup(s)
    make_domain(s, "ftve-a")
    make_domain(s, "ftve-other")

    # ---- b subscribed; events of another domain and a peer pause/resume promote nothing ----
    a, b = start_pair(s, LIBVIRT_B)
    try:
        s.check("b standby and in sync", ready(b), b.log())
        s.check("b subscribed to libvirt events",
                b.wait_line("libvirt events: subscribed at qemu:///system, watching domain ftve-a", 10) is not None
                and metric(metrics("b"), "ftpair_peer_events_subscribed") == 1, b.log())
        p = s.virsh("destroy", "ftve-other")
        s.check("other domain destroyed", p.returncode == 0, p.stderr.strip())
        s.virsh("suspend", "ftve-a")
        s.virsh("resume", "ftve-a")
        time.sleep(1.5)
        m = metrics("b")
        s.check("other domain's death seen and ignored", metric(m, "ftpair_peer_events_other_domains_total") >= 1,
                str(metric(m, "ftpair_peer_events_other_domains_total")))
        s.check("peer pause/resume seen, not a signal",
                metric(m, "ftpair_peer_events_total", event="other") >= 2 and
                metric(m, "ftpair_peer_events_total", event="stopped") == 0,
                str(metric(m, "ftpair_peer_events_total", event="other")))
        s.check("b still standby", b.role() == "STANDBY_READY" and
                metric(m, "ftpair_failovers_total", reason="peer_domain_event") == 0, b.log())

        # ---- the peer's domain destroyed while a still beats: only the event can promote b ----
        t0 = time.monotonic()
        p = s.virsh("destroy", "ftve-a")
        t_ret = time.monotonic()
        s.check("peer domain destroyed", p.returncode == 0, p.stderr.strip())
        hit = b.wait_line("is ACTIVE", 10, after=t0)
        # libvirt reports a destroy as shutdown/host (qemu got SIGTERM), then stopped/destroyed.
        s.check("b promoted on the event", hit is not None and re.search(
            r"peer_domain_event: peer domain ftve-a (shutdown/host|stopped/destroyed)", hit[1]) is not None, b.log())
        m = metrics("b")
        s.check("failover counted as peer_domain_event",
                metric(m, "ftpair_failovers_total", reason="peer_domain_event") == 1 and
                metric(m, "ftpair_failovers_total", reason="peer_silent") == 0 and
                metric(m, "ftpair_peer_events_total", event="shutdown") +
                metric(m, "ftpair_peer_events_total", event="stopped") >= 1, str(m and {k: v for k, v in m.items()
                                                                                    if "failovers" in k[0]}))
        fenced = b.find("promoted (peer_domain_event")
        s.check("b fenced the dead domain before promoting", fenced is not None and "fenced in" in fenced[1],
                fenced[1] if fenced else b.log())
        s.check("old active steps down (higher generation)", a.wait_line("stepping down", 5, after=t0) is not None,
                a.log())
        ev = b.find("peer domain ftve-a", after=t0)
        if hit:
            V.log("virsh destroy issued -> event %s ms, -> b ACTIVE %.1f ms (virsh returned after %.1f ms); %s" % (
                "%.1f" % ((ev[0] - t0) * 1e3) if ev else "?", (hit[0] - t0) * 1e3, (t_ret - t0) * 1e3,
                fenced[1] if fenced else ""))
    finally:
        stop_pair(b, a)

    # ---- the figure: the peer VM dies (its qemu and the active's process killed at once) ----
    # libvirt emits "stopped" only after its own teardown of the domain, so the event races the
    # beats: with the default fast beats (5 ms x 8) and with slow ones (250 ms x 8 = 2 s). Each
    # round: kill -> the event's log line, kill -> b "is ACTIVE" (whichever signal won), and the
    # fence time. Figures, not assertions, except that beats alone promote as peer_silent.
    SLOW = ("failover.heartbeat_interval_ms=250", "failover.miss_threshold=8")
    modes = [("event", "250x8", SLOW, None), ("beats", "250x8", SLOW, "peer_silent"),
             ("event", "5x8", (), None), ("beats", "5x8", (), "peer_silent")]
    results = {}
    for rep in range(REPS):
        for signal_, timers, over, want in modes:
            tag = "%s %s round %d" % (signal_, timers, rep)
            make_domain(s, "ftve-a")
            extra = over + (() if signal_ == "event" else ("failover.libvirt_events=false",))
            a, b = start_pair(s, LIBVIRT_B, extra)
            try:
                if not ready(b):
                    s.check("b ready (%s)" % tag, False, b.log())
                    continue
                if signal_ == "event" and not b.wait_line("libvirt events: subscribed", 10):
                    s.check("b subscribed (%s)" % tag, False, b.log())
                    continue
                time.sleep(0.5)
                qpid = V.read_pid("/run/libvirt/qemu/ftve-a.pid")
                t0 = time.monotonic()
                os.kill(qpid, signal.SIGKILL)
                a.p.send_signal(signal.SIGKILL)
                hit = b.wait_line("is ACTIVE", 10, after=t0)
                ev = b.find("peer domain ftve-a stopped", after=t0)
                fenced = b.find("fenced in", after=t0)
                reason = "peer_domain_event" if hit and "peer_domain_event" in hit[1] else (
                    "peer_silent" if hit and "missed heartbeats" in hit[1] else "none")
                refused = b.find("promotion refused", after=t0)
                s.check("%s: fencing the vanished domain succeeded at once" % tag, refused is None,
                        refused[1] if refused else "")
                if want:
                    s.check("%s: b promoted by %s" % (tag, want), reason == want, b.log())
                else:
                    s.check("%s: b promoted" % tag, hit is not None, b.log())
                if hit:
                    r = {"kill_to_active_ms": round((hit[0] - t0) * 1e3, 1), "reason": reason,
                         "kill_to_event_ms": round((ev[0] - t0) * 1e3, 1) if ev else None,
                         "fence_ms": float(re.search(r"fenced in ([0-9.]+) ms", fenced[1]).group(1)) if fenced else None}
                    results.setdefault((signal_, timers), []).append(r)
                    print(json.dumps({"name": "peer_vm_death_to_active_ms", "value": r["kill_to_active_ms"], "unit": "ms",
                                      "params": {"signal": signal_, "timers": timers, "cause": "qemu+ftpaird killed",
                                                 "reason": reason, "kill_to_event_ms": r["kill_to_event_ms"],
                                                 "fence_ms": r["fence_ms"]}}))
                    sys.stdout.flush()
            finally:
                stop_pair(b, a)
                s.virsh("destroy", "ftve-a")
    for (signal_, timers), rs in sorted(results.items()):
        v = sorted(r["kill_to_active_ms"] for r in rs)
        V.log("%s %s: kill -> b ACTIVE median %.1f ms, max %.1f ms, n=%d; reasons %s; kill -> event %s; fence %s" % (
            signal_, timers, v[len(v) // 2], v[-1], len(v), sorted(set(r["reason"] for r in rs)),
            [r["kill_to_event_ms"] for r in rs], [r["fence_ms"] for r in rs]))

    # ---- bad input: events from an unreachable libvirt URI ----
    bad_uri = "qemu+tcp://%s/system" % BLACKHOLE
    make_domain(s, "ftve-a")
    a, b = start_pair(s, dict(LIBVIRT_B, libvirt_uri=bad_uri))
    try:
        t_ready = ready(b) and time.monotonic()
        s.check("b starts and syncs although libvirt is unreachable", bool(t_ready), b.log())
        fail = b.wait_line("libvirt events: cannot subscribe at %s: cannot reach libvirt at %s within 5000 ms; "
                           "retrying in 1000 ms (failover still runs on beats)" % (bad_uri, bad_uri), 15)
        s.check("unreachable URI: clear message", fail is not None, b.log())
        s.check("start was not held up by the subscription", fail is not None and t_ready and t_ready < fail[0],
                "ready at %.2fs, failure logged at %.2fs" % ((t_ready or 0) - b.t_start, (fail[0] if fail else 0) - b.t_start))
        m = metrics("b")
        s.check("failure counted, not subscribed",
                metric(m, "ftpair_peer_events_subscribe_failures_total") >= 1 and
                metric(m, "ftpair_peer_events_subscribed") == 0, str(metric(m, "ftpair_peer_events_subscribe_failures_total")))
        h0 = metric(m, "ftpair_heartbeats_sent_total")
        time.sleep(0.5)
        m = metrics("b")
        s.check("beats keep running", metric(m, "ftpair_heartbeats_sent_total") > h0 and b.role() == "STANDBY_READY",
                "%s -> %s" % (h0, metric(m, "ftpair_heartbeats_sent_total")))
        t0 = time.monotonic()
        b.stop()
        s.check("b stops promptly while a subscribe attempt hangs", time.monotonic() - t0 < 8,
                "%.2fs" % (time.monotonic() - t0))
    finally:
        stop_pair(b, a)

sys.exit(s.exit_code())
