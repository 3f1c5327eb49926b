#!/usr/bin/python3
"""Lab integration test: dataplane beats (issue 19).

The pair runs with failover.dataplane_beat_us=1000: each node's worker sends an authenticated
0x88B5 frame on its LAN port every millisecond, and the peer's worker takes it off in the
classify stage. An attacker on the LAN (the root namespace, on the LAN bridge) sends frames:

  1. both nodes hear each other's dataplane beats; the link is up; status shows them; the
     standby's watch is armed (failover.dataplane_arm_ms of steady beats), the active's not
  2. malformed (short, bad magic, bad version, bad field), unauthenticated, unknown-key and
     bad-MAC beats ("node a is STANDBY at generation 2^40") to the standby: each counted under
     its reason, roles unchanged, nobody promoted, genuine beats still heard
  3. genuine beats of a captured off b's bridge port and replayed to b: counted as replays
  4. the dataplane link cut (b's LAN bridge port down) while the control-plane beats flow:
     b raises the link-down alarm (ftpair_dp_link_up 0, probes' verdict beats_lost), nobody
     is promoted, and the alarm clears when the link comes back
  5. the same cut, and the active SIGKILLed: b still fails over (the control-plane beats
     decide while the dataplane link is down, or the watch's next probe finds nobody)
  6. with the link back and a rejoined as standby, b's worker stalled (test hook): a promotes,
     counted as dp_worker_stall (the probe's answer says the worker is not runnable)

Timed failovers are `make bench ONLY=failover` (timers=dp). Exit 0 pass, 1 fail, 77 skip.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402

FORGE = os.path.join(L.LAB_DIR, "forge_dp_beats.py")
BRIDGE = L.PREFIX + "ftpbr-lan"
# Beats every 1 ms, missed after 5 (the bench's profile with no spurious failover in 60 s), and a
# 10 ms probe: this test checks what the beats do, not how fast (make bench ONLY=failover does).
# With 3 misses and a 2 ms probe a spurious failover came in two of today's runs with a compile
# beside the lab: on this shared 2-vCPU machine both nodes' workers poll the two CPUs, and even a
# real-time thread wakes up to 18 ms late (cyclictest, docs/BENCHMARKS.md).
DP = ["--set", "failover.dataplane_beat_us=1000", "--set", "failover.dataplane_miss=5",
      "--set", "failover.dataplane_probe_us=10000"]
KINDS = ("short", "bad_magic", "bad_version", "bad_field", "unauthenticated", "unknown_key", "bad_mac")
COUNT = 20
# SIGKILL / worker stall to promotion, scraped every 20 ms: 5 ms of silence, the probe, fencing
# and promotion take about 20 ms; the bound leaves room for a busy 2-CPU machine.
FAILOVER_BOUND_S = 1.0

m = L.node_metric


def lan_mac(node):
    r = L.run_in(node, ["cat", "/sys/class/net/lan0/address"])
    return r.stdout.strip()


def rejected(node, reason):
    return m(node, "ftpair_dp_beats_rejected_total", reason=reason)


def forge(chk, what, *args):
    r = subprocess.run([L.PY, FORGE] + [str(a) for a in args], capture_output=True, text=True, timeout=60)
    doc = L.last_json(r.stdout) or {}
    chk.check("%s: sent" % what, r.returncode == 0 and doc.get("sent", 0) > 0,
              "rc %d: %s %s" % (r.returncode, r.stdout[-300:], r.stderr[-600:]))
    return doc


def roles_unchanged(active, standby):
    return m(active, "ftpair_vip_owner") == 1 and m(standby, "ftpair_role", state="STANDBY_READY") == 1


def failovers(node):
    return sum(m(node, "ftpair_failovers_total", reason=r) or 0
               for r in ("peer_silent", "peer_unhealthy", "dp_silent", "dp_worker_stall"))


def wait_pair(chk, active, what, timeout=20):
    standby = "b" if active == "a" else "a"
    ok = L.wait_until(lambda: m(active, "ftpair_vip_owner") == 1 and m(active, "ftpair_replication_in_sync") == 1
                      and m(standby, "ftpair_role", state="STANDBY_READY") == 1
                      and m(standby, "ftpair_dp_beat_peer_silence_seconds") is not None
                      and 0 <= m(standby, "ftpair_dp_beat_peer_silence_seconds") < 0.5
                      and m(standby, "ftpair_dp_watch_armed") == 1, timeout, 0.1)
    return chk.check("%s: %s active, %s standby in sync, hearing its dataplane beats, armed" % (what, active, standby),
                     ok)


def link(host_veth, up):
    subprocess.run(["ip", "link", "set", host_veth, "up" if up else "down"], check=False)


def main():
    L.require_lab(need_scapy=True)
    with L.LabSession(deadline_s=150) as lab:
        chk = lab.checker
        lab.setup()
        for n in ("a", "b"):
            L.wipe_state(n)
        lab.start_node("a", "--role", "active", *DP)
        lab.start_node("b", "--role", "standby", *DP)
        if not wait_pair(chk, "a", "start"):
            return lab.exit_code()

        # 1. beats both ways
        h0 = {n: m(n, "ftpair_dp_beats_heard_total") for n in ("a", "b")}
        time.sleep(0.5)
        heard = {n: m(n, "ftpair_dp_beats_heard_total") - h0[n] for n in ("a", "b")}
        chk.check("1. each node hears the other's dataplane beats (~500 in 0.5 s)", min(heard.values()) >= 250, str(heard))
        chk.check("1. the dataplane link is up on both, the watch runs",
                  m("a", "ftpair_dp_link_up") == 1 and m("b", "ftpair_dp_link_up") == 1, "")
        st = L.status("b") or {}
        chk.check("1. status shows the dataplane beats, the standby's watch armed",
                  "link up" in st.get("dataplane_beats", "") and "; armed" in st.get("dataplane_beats", ""),
                  st.get("dataplane_beats", "(none)"))
        chk.check("1. the active's watch is not armed (only a standby in sync acts on a silence)",
                  m("a", "ftpair_dp_watch_armed") == 0 and m("b", "ftpair_dp_watch_armed") == 1, "")

        # 2. forged and malformed beats to the standby
        b_mac = lan_mac("b")
        before = {k: rejected("b", k) for k in KINDS}
        f0, gen_a = failovers("b"), m("a", "ftpair_generation")
        for k in KINDS:
            forge(chk, "2. %s x%d to b" % (k, COUNT), "forge", "--iface", BRIDGE, "--dst-mac", b_mac, "--kind", k,
                  "--node", "a", "--count", COUNT)
        time.sleep(0.3)
        for k in KINDS:
            chk.check("2. b counted %d %s frames" % (COUNT, k), rejected("b", k) - before[k] == COUNT,
                      "%g -> %g" % (before[k], rejected("b", k)))
        h0 = m("b", "ftpair_dp_beats_heard_total")
        time.sleep(0.3)
        chk.check("2. b still hears a's genuine beats", m("b", "ftpair_dp_beats_heard_total") - h0 >= 100, "")
        chk.check("2. roles unchanged, nobody promoted, a at its generation",
                  roles_unchanged("a", "b") and failovers("b") == f0 and m("a", "ftpair_generation") == gen_a, "")

        # 3. replayed genuine beats
        r0 = rejected("b", "replay") + rejected("b", "stale_boot")
        doc = forge(chk, "3. a's beats replayed to b", "replay", "--iface", BRIDGE, "--capture-iface",
                    L.PREFIX + "b-lan", "--dst-mac", b_mac, "--node", "a", "--capture-s", 0.3, "--count", COUNT)
        time.sleep(0.3)
        got = rejected("b", "replay") + rejected("b", "stale_boot") - r0
        chk.check("3. b refused every replayed beat (%d captured)" % doc.get("captured", 0), got == COUNT,
                  "replay+stale_boot grew by %g" % got)
        chk.check("3. roles unchanged", roles_unchanged("a", "b") and failovers("b") == f0, "")

        # 4. the dataplane link cut; the control-plane beats still flow
        veth = L.PREFIX + "b-lan"
        lost0 = m("b", "ftpair_dp_probes_total", verdict="beats_lost")
        watch = L.OwnerWatch(confirm=False)
        link(veth, False)
        try:
            down = L.wait_until(lambda: m("b", "ftpair_dp_link_up") == 0, 3, 0.05)
            chk.check("4. link cut: b raises the dataplane link-down alarm", down,
                      "link_up %s, beats_lost probes %s" % (m("b", "ftpair_dp_link_up"),
                                                            m("b", "ftpair_dp_probes_total", verdict="beats_lost")))
            time.sleep(1.5)
            chk.check("4. link cut: b's probes say the beats are lost (a's worker still sends)",
                      m("b", "ftpair_dp_probes_total", verdict="beats_lost") > lost0, "")
            chk.check("4. link cut for 1.5 s: nobody promoted", roles_unchanged("a", "b") and failovers("b") == f0
                      and failovers("a") == 0, "b failovers %g" % failovers("b"))
        finally:
            link(veth, True)
        up = L.wait_until(lambda: m("b", "ftpair_dp_link_up") == 1, 3, 0.05)
        chk.check("4. link back: the alarm clears", up, "")
        watch.stop()
        chk.check("4. never two owners", not watch.both, "%d samples" % len(watch.both))

        # 5. the same cut, and the active really dies
        link(veth, False)
        try:
            L.wait_until(lambda: m("b", "ftpair_dp_link_up") == 0, 3, 0.05)
            t0 = time.monotonic()
            L.lab("signal", "a", "KILL", check=False)
            took = L.wait_until(lambda: m("b", "ftpair_vip_owner", scrape_timeout=0.5) == 1, 10, 0.02)
            t1 = time.monotonic()
        finally:
            link(veth, True)
        chk.check("5. link cut and a killed: b took over within %.1f s" % FAILOVER_BOUND_S,
                  took and t1 - t0 <= FAILOVER_BOUND_S, "after %.2f s" % (t1 - t0))
        # With the dataplane link down its beats say nothing: the control-plane beats decide
        # (peer_silent), unless the watch's next probe (100 ms after the link-down verdict)
        # comes first and finds nobody (dp_silent).
        chk.check("5. counted as one failover (peer_silent or dp_silent)",
                  m("b", "ftpair_failovers_total", reason="dp_silent")
                  + m("b", "ftpair_failovers_total", reason="peer_silent") == 1,
                  "dp_silent %s, peer_silent %s" % (m("b", "ftpair_failovers_total", reason="dp_silent"),
                                                    m("b", "ftpair_failovers_total", reason="peer_silent")))

        # 6. a rejoins; b's worker stalls
        lab.start_node("a", "--role", "standby", *DP)
        if not wait_pair(chk, "b", "6. a rejoined"):
            return lab.exit_code()
        time.sleep(0.5)
        t0 = time.monotonic()
        L.lab("signal", "b", "USR1")  # worker.test_hooks: b's worker stalls
        took = L.wait_until(lambda: m("a", "ftpair_vip_owner", scrape_timeout=0.5) == 1, 10, 0.02)
        t1 = time.monotonic()
        chk.check("6. b's worker stalled: a took over within %.1f s" % FAILOVER_BOUND_S,
                  took and t1 - t0 <= FAILOVER_BOUND_S, "after %.2f s" % (t1 - t0))
        chk.check("6. counted as dp_worker_stall", m("a", "ftpair_failovers_total", reason="dp_worker_stall") == 1,
                  "dp_worker_stall %s dp_silent %s peer_unhealthy %s" % (
                      m("a", "ftpair_failovers_total", reason="dp_worker_stall"),
                      m("a", "ftpair_failovers_total", reason="dp_silent"),
                      m("a", "ftpair_failovers_total", reason="peer_unhealthy")))

        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s/%s.log ----\n%s----" % (L.RUN, n, L.node_log_tail(n, 25)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
