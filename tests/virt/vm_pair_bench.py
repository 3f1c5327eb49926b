#!/usr/bin/python3
"""The VM pair's failover figures (make bench ONLY=virt): two TCG guests running ftpaird on DPDK's
net_virtio PMD (tests/virt/vmpair.py), CONNS byte-checked TCP connections through the active
guest, and four causes, each RUNS times, the roles alternating:

  destroy     `virsh destroy` of the active's domain (the survivor hears libvirt's lifecycle
              event, fences with libvirt and promotes)
  kill        SIGKILL of ftpaird inside the active guest: SysRq-i through the guest's keyboard
              (`virsh send-key ... KEY_LEFTALT KEY_SYSRQ KEY_I`: the kernel kills every process
              but init; the init then powers the guest off). The survivor learns it from the
              missing beats.
  switchover  `ftpairctl switchover` on the active
  suspend     `virsh suspend` of the active's domain (a paused VM: missing beats; the survivor
              fences it with libvirt, destroying it)

vm_failover_ms is from the cause to the survivor reporting itself active (Control.Status polled
every 50 ms); vm_connections_survived_ratio counts the connections that echoed again after it.
After each cause the failed guest is started again and rejoins as a standby in sync.

Then, for each --timers setting (heartbeat interval x missed beats, sent to the guests as OEM
strings), the pair runs --spurious-s seconds under the same traffic with no fault:
vm_spurious_failovers{seconds,timers} counts the generations that changed.

JSON lines on stdout; progress on stderr. Root; starts and stops its own libvirtd."""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import virtutil as V
import vmpair as P

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--causes", default="destroy,kill,switchover,suspend")
ap.add_argument("--timers", default="50x10,100x30", help="heartbeat_ms x miss, comma-separated; the "
                "first is also the one the causes run with")
ap.add_argument("--spurious-s", type=float, default=300)
a = ap.parse_args()
V.log = lambda msg: sys.stderr.write(msg + "\n")
# A SIGTERM (make bench stopped, a timeout) ends through the session's cleanup: domains, libvirtd,
# namespaces and the nft table go.
signal.signal(signal.SIGTERM, lambda *_: sys.exit("vm_pair_bench: stopped by SIGTERM"))
P.require()
timers = [tuple(int(x) for x in t.split("x")) for t in a.timers.split(",") if t]
HOST = "2 shared vCPUs, TCG guests 768 MiB 1 vCPU"


KEEP = os.environ.get("VM_BENCH_KEEP", "/tmp/vm_pair_bench")


def fail(s, why):
    """Stops the bench with the reason, keeping both guests' consoles for a look afterwards."""
    os.makedirs(KEEP, exist_ok=True)
    for f in os.listdir(s.dir):
        if f.endswith(".serial") or ".serial." in f:
            shutil.copy(os.path.join(s.dir, f), KEEP)
    raise SystemExit("vm_pair_bench: %s\n%s\n(the guests' consoles: %s)" % (why, P.diag(s), KEEP))


def emit(name, value, unit, params):
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "params": params}), flush=True)


def timers_config(t):
    return "failover.heartbeat_interval_ms: %d, failover.miss_threshold: %d" % t


def up(s, t):
    spec, rc, err = P.deploy(s, config_extra=timers_config(t), cmdline_extra="sysrq_always_enabled=1")
    if rc != 0:
        raise SystemExit("vm_pair_bench: deploy: " + err)
    got, took = P.wait_for("a active, b in sync", lambda: P.in_sync(P.A_IP, P.B_IP), 300)
    if not got:
        raise SystemExit("vm_pair_bench: the pair did not come up\n" + P.diag(s))
    traffic = P.Traffic(s, P.CONNS)
    ok, _ = P.wait_for("streaming", traffic.streaming, 90)
    if not ok:
        raise SystemExit("vm_pair_bench: no traffic\n" + traffic.stderr())
    return spec, traffic


def down(s, spec, traffic):
    traffic.stop_now()
    traffic.server.kill()
    traffic.server.wait()
    s.virt("teardown", "--spec", spec, "--acpi-timeout-ms", "0")
    P.nets_down()


def generations():
    g = {}
    for n in "ab":
        st = P.status(P.IP[n], timeout=1)
        if st:
            g[n] = int(st.get("generation", 0))
    return g


with V.VirtSession(prefix=P.PAIR, libvirt_tcp=True) as s:
    # ---- the causes ----
    causes = [c for c in a.causes.split(",") if c]
    if causes and a.runs > 0:
        spec, traffic = up(s, timers[0])
        times = {c: [] for c in causes}
        kept = {c: [] for c in causes}
        active, standby = "a", "b"
        for r in range(a.runs):
            for cause in causes:
                got, _ = P.wait_for("%s active, %s in sync" % (active, standby),
                                    lambda: P.in_sync(P.IP[active], P.IP[standby], P.CONNS), 240)
                if not got:
                    fail(s, "no pair in sync before %s" % cause)
                dom = P.PAIR + "-" + active
                t0, w0 = time.monotonic(), time.time()
                if cause == "destroy":
                    p = s.virsh("destroy", dom)
                elif cause == "kill":
                    p = s.virsh("send-key", dom, "KEY_LEFTALT", "KEY_SYSRQ", "KEY_I")
                elif cause == "suspend":
                    p = s.virsh("suspend", dom)
                else:
                    p = subprocess.run([P.FTPAIRCTL, "--addr", "%s:%d" % (P.IP[active], P.PORT), "--timeout", "30",
                                        "switchover"], capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit("vm_pair_bench: %s: %s" % (cause, p.stderr))
                got, _ = P.wait_for("%s active" % standby,
                                    lambda: (P.status(P.IP[standby], timeout=1) or {}).get("role") == "active", 120,
                                    step=0.05)
                if not got:
                    fail(s, "%s: no takeover (ftpairctl: %s)" % (cause, (p.stdout + p.stderr).strip()))
                ms = (time.monotonic() - t0) * 1000
                served = time.time()
                # Every connection echoes again through the survivor (or is lost).
                def all_echo():
                    doc = traffic.interim()
                    last = (doc or {}).get("last_echo_unix", [])
                    return doc if last and all(x > served for x in last) else None
                doc, _ = P.wait_for("every connection echoes again", all_echo, 60, step=1)
                if doc is None:
                    doc = traffic.interim()
                n_ok = sum(1 for x in (doc or {}).get("last_echo_unix", []) if x > served)
                times[cause].append(ms)
                kept[cause].append(n_ok / float(P.CONNS))
                V.log("run %d %s: %s -> %s in %.0f ms, %d of %d connections kept" % (r, cause, active, standby, ms, n_ok,
                                                                                     P.CONNS))
                # The failed guest back as a standby.
                if cause != "switchover":
                    off, _ = P.wait_for("%s off" % dom, lambda: s.domstate(dom) == "shut off", 60, step=0.2)
                    if not off:
                        fail(s, "%s: %s is still %s" % (cause, dom, s.domstate(dom)))
                    p = s.virsh("start", dom)
                    if p.returncode != 0:
                        raise SystemExit("vm_pair_bench: restart %s: %s" % (dom, p.stderr))
                active, standby = standby, active
        for cause in causes:
            v = times[cause]
            params = {"cause": cause, "runs": len(v), "min": round(min(v), 1), "max": round(max(v), 1),
                      "timers": "%dx%d" % timers[0], "conns": P.CONNS, "host": HOST, "seen_by": "Control.Status every 50 ms"}
            emit("vm_failover_ms_p50", statistics.median(v), "ms", params)
            emit("vm_connections_survived_ratio", statistics.median(kept[cause]), "ratio",
                 {"cause": cause, "runs": len(v), "min": min(kept[cause]), "conns": P.CONNS})
        down(s, spec, traffic)

    # ---- no fault: spurious failovers per timers setting ----
    for t in timers if a.spurious_s > 0 else []:
        spec, traffic = up(s, t)
        # Every failover raises the pair's generation by one (the node that takes over moves it).
        g0 = max(generations().values() or [0])
        t_end = time.monotonic() + a.spurious_s
        top = g0
        while time.monotonic() < t_end:
            time.sleep(1)
            g = max(generations().values() or [0])
            if g > top:
                V.log("spurious: generation %d -> %d" % (top, g))
                top = g
        changes = top - g0
        doc = traffic.interim()
        emit("vm_spurious_failovers", changes, "count",
             {"seconds": int(a.spurious_s), "timers": "%dx%d" % t, "conns": P.CONNS, "host": HOST,
              "connections_broken": P.broken(doc)})
        down(s, spec, traffic)
