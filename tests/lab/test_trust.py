#!/usr/bin/python3
"""Lab integration test: roles that cannot be forged, and a pair that always elects an active.

The lab runs the secure configuration: ftpair-lab's node config signs fast beats with a key it
generates per run (failover.beat_keys). An attacker on the management network (the root
namespace, on the management bridge) sends UDP datagrams with a node's address and port:

  1. both nodes started as standby: the pair elects one within 1 s (+ beats, + start-up) and
     is never seen with two owners; the election is counted (failovers{reason="election"})
  2. forged "I am ACTIVE with generation 2^40" to the active, with the standby's source:
     no role changes, counted as unauthenticated
  3. forged "my dataplane is unhealthy" to the standby, with the active's source: no fence,
     no promotion, counted
  4. genuine datagrams captured off the bridge and replayed 1 s later: counted as replays,
     no role changes
  5. after all that, a real SIGKILL of the active still fails over (the forgeries did not
     blind the standby)

Key rotation is shown by test_beat_auth (RotationKeepsThePairTalking); the fault matrix is
`make bench ONLY=faults` (not yet). Exit 0 pass, 1 fail, 77 skip.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402

FORGE = os.path.join(L.LAB_DIR, "forge_beats.py")
BRIDGE = L.PREFIX + "ftpbr-mgmt"
BEAT_PORT = 50052
ELECT_BOUND_S = 3.0   # 1 s of both-standby beats, plus the initial role decision and scraping

m = L.node_metric


def mac_of(node):
    r = L.run_in(node, ["cat", "/sys/class/net/mgmt0/address"])
    return r.stdout.strip()


def rejected(node, reason):
    return m(node, "ftpair_fast_beats_rejected_total", reason=reason)


def roles():
    return {n: L.vip_owner(n) for n in ("a", "b")}


def wait_pair(chk, active, what, timeout=20):
    standby = "b" if active == "a" else "a"
    ok = L.wait_until(lambda: m(active, "ftpair_vip_owner") == 1 and m(active, "ftpair_replication_in_sync") == 1
                      and m(standby, "ftpair_role", state="STANDBY_READY") == 1, timeout, 0.1)
    return chk.check("%s: %s active, %s standby in sync" % (what, active, standby), ok)


def forge(chk, what, src_node, dst_node, *args):
    argv = [L.PY, FORGE] + list(args) + ["--iface", BRIDGE, "--src", L.MGMT_IP[src_node],
                                         "--dst", L.MGMT_IP[dst_node], "--dst-mac", mac_of(dst_node),
                                         "--port", BEAT_PORT]
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    doc = L.last_json(r.stdout)
    chk.check("%s: sent" % what, r.returncode == 0 and doc and doc.get("sent", 0) > 0,
              "rc %d: %s %s" % (r.returncode, r.stdout[-300:], r.stderr[-600:]))
    return doc or {}


def main():
    L.require_lab(need_scapy=True)
    with L.LabSession(deadline_s=200) as lab:
        chk = lab.checker
        lab.setup()

        # 1. both standby -> one active, elected
        for n in ("a", "b"):
            L.wipe_state(n)
        watch = L.OwnerWatch(confirm=False)
        lab.start_node("a", "--role", "standby")
        lab.start_node("b", "--role", "standby")
        t0 = time.monotonic()  # both up (ftpair-lab start returns once /metrics answers)
        elected = L.wait_until(lambda: sum(1 for v in roles().values() if v == 1) == 1, 15, 0.05)
        took = time.monotonic() - t0
        time.sleep(1.0)
        watch.stop()
        owners = roles()
        chk.check("1. both started standby: exactly one active within %.0f s of the second start" % ELECT_BOUND_S,
                  elected and took <= ELECT_BOUND_S and sum(1 for v in owners.values() if v == 1) == 1,
                  "after %.2f s: owners %s" % (took, owners))
        chk.check("1. never two owners during the election", not watch.both, "%d samples" % len(watch.both))
        winner = "a" if owners.get("a") == 1 else "b"
        chk.check("1. the lower node id won (both equal otherwise) and counted it",
                  winner == "a" and m("a", "ftpair_failovers_total", reason="election") == 1,
                  "winner %s; a's elections %g" % (winner, m("a", "ftpair_failovers_total", reason="election")))
        if not wait_pair(chk, "a", "after the election"):
            return lab.exit_code()
        chk.check("lab pair signs its beats (no security warning for beats)",
                  m("a", "ftpair_security_warning", what="beats_unauthenticated") == 0
                  and m("a", "ftpair_fast_beats_heard_total") > 0, "")

        # 2. forged "ACTIVE, generation 2^40" to the active, from the standby's address
        gen_a = m("a", "ftpair_generation")
        u0 = rejected("a", "unauthenticated")
        forge(chk, "2. forged ACTIVE 2^40 to a", "b", "a", "forge", "--kind", "active-2p40", "--count", 20)
        time.sleep(0.5)
        chk.check("2. a counted 20 unauthenticated datagrams", rejected("a", "unauthenticated") >= u0 + 20,
                  "%g -> %g" % (u0, rejected("a", "unauthenticated")))
        chk.check("2. a is still active at its generation, b still standby",
                  m("a", "ftpair_vip_owner") == 1 and m("a", "ftpair_generation") == gen_a
                  and m("b", "ftpair_role", state="STANDBY_READY") == 1,
                  "a owner %g gen %g (was %g); b ready %g" % (m("a", "ftpair_vip_owner"), m("a", "ftpair_generation"),
                                                             gen_a, m("b", "ftpair_role", state="STANDBY_READY")))

        # 3. forged "unhealthy" to the standby, from the active's address
        u0 = rejected("b", "unauthenticated")
        f0 = m("b", "ftpair_failovers_total", reason="peer_unhealthy")
        a_pid = L.node_pid("a")
        forge(chk, "3. forged unhealthy to b", "a", "b", "forge", "--kind", "unhealthy", "--count", 20)
        time.sleep(0.5)
        chk.check("3. b counted 20 unauthenticated datagrams", rejected("b", "unauthenticated") >= u0 + 20,
                  "%g -> %g" % (u0, rejected("b", "unauthenticated")))
        chk.check("3. b fenced nothing and did not promote; a runs",
                  m("b", "ftpair_failovers_total", reason="peer_unhealthy") == f0 and L.node_pid("a") == a_pid
                  and m("a", "ftpair_vip_owner") == 1 and m("b", "ftpair_vip_owner") == 0,
                  "b peer_unhealthy %g (was %g); a pid %s (was %s)" % (
                      m("b", "ftpair_failovers_total", reason="peer_unhealthy"), f0, L.node_pid("a"), a_pid))

        # 4. replays of genuine datagrams, b -> a
        r0, s0 = rejected("a", "replay"), rejected("a", "stale_boot")
        doc = forge(chk, "4. replayed genuine beats b -> a", "b", "a", "replay", "--capture-s", 0.3, "--count", 20)
        time.sleep(0.5)
        got = rejected("a", "replay") + rejected("a", "stale_boot") - r0 - s0
        chk.check("4. a refused every replayed datagram (%d captured)" % doc.get("captured", 0), got >= 20,
                  "replay+stale_boot grew by %g" % got)
        chk.check("4. roles unchanged", m("a", "ftpair_vip_owner") == 1
                  and m("b", "ftpair_role", state="STANDBY_READY") == 1, str(roles()))

        # 5. a real failure is still seen
        t0 = time.monotonic()
        L.lab("signal", "a", "KILL", check=False)
        took = L.wait_until(lambda: m("b", "ftpair_vip_owner") == 1, 10, 0.02)
        chk.check("5. SIGKILL of a: b took over", took, "after %.2f s" % (time.monotonic() - t0))

        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s/%s.log ----\n%s----" % (L.RUN, n, L.node_log_tail(n, 25)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
