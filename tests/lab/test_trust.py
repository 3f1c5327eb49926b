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
  5. key rotation without a restart (SIGHUP, one node at a time): both add key 2 second, both
     sign with it, both drop key 1. The fast beats are heard at every step, none is refused
     as unknown_key or bad_mac, no role changes. A reload naming a key file that cannot be
     read is refused whole (the running keys stay).
  6. a fault while the workers are parked: the standby's worker is stalled (test hook) when
     the active asks it to take over. Its transition cannot prepare and changes nothing: the
     old active keeps the role, the standby keeps its generation and goes on taking the
     active's stream, so the pair is back in sync (no "unprotected" alarm) within 10 s,
     never two actives. With the worker released, the same switchover completes.
  7. `ftpairctl flows` polled on the standby, with 600 flows in the table, while the active is
     SIGKILLed: the promotion is not delayed (within the bound below), and the forgeries
     above did not blind the standby.

The fault matrix on the management network is lab_faults and `make bench ONLY=faults`.
Exit 0 pass, 1 fail, 77 skip.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402

FORGE = os.path.join(L.LAB_DIR, "forge_beats.py")
BRIDGE = L.PREFIX + "ftpbr-mgmt"
BEAT_PORT = 50052
ELECT_BOUND_S = 3.0   # 1 s of both-standby beats, plus the initial role decision and scraping
# SIGKILL to the standby owning the VIPs, scraped every 20 ms: detection at the lab's timers
# (5 ms x 8 beats) plus fencing and promotion took 0.22 s without Flows polling.
KILL_BOUND_S = 1.0
UDP_PORT = 7000       # nattool udp-reflect on the server
FLOWS = 600

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


def reload(node):
    """SIGHUP a node; True once its applied-reload counter rose."""
    before = m(node, "ftpair_config_reloads_total", result="applied")
    L.lab("signal", node, "HUP")
    return L.wait_until(lambda: m(node, "ftpair_config_reloads_total", result="applied") > before, 5, 0.05)


def set_beat_keys(node, keys):
    """Rewrites failover.beat_keys in the node's config file: keys = [(id, file), ...]."""
    path = os.path.join(L.RUN, "%s.yaml" % node)
    with open(path) as f:
        text = f.read()
    block = "  beat_keys:\n" + "".join("    - {id: %d, file: %s}\n" % k for k in keys)
    new, n = re.subn(r"  beat_keys:\n(    - .*\n)+", lambda _: block, text)
    if n != 1:
        raise L.LabError("no failover.beat_keys block in %s" % path)
    with open(path, "w") as f:
        f.write(new)


def refused_beats(node):
    return rejected(node, "bad_mac") + rejected(node, "unknown_key")


def rotation(chk):
    key1 = os.path.join(L.RUN, "beat.key")
    key2 = os.path.join(L.RUN, "beat2.key")
    with open(key2, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(key2, 0o600)
    bad0 = {n: refused_beats(n) for n in ("a", "b")}
    steps = [("both hold key 2 second", [(1, key1), (2, key2)]),
             ("both sign with key 2", [(2, key2), (1, key1)]),
             ("key 1 retired", [(2, key2)])]
    for what, keys in steps:
        for n in ("a", "b"):  # one node at a time: the pair must keep talking in between
            set_beat_keys(n, keys)
            chk.check("5. %s: %s reloaded" % (what, n), reload(n), L.node_log_tail(n, 5))
            time.sleep(0.3)
        heard0 = {n: m(n, "ftpair_fast_beats_heard_total") for n in ("a", "b")}
        time.sleep(0.5)
        heard = {n: m(n, "ftpair_fast_beats_heard_total") - heard0[n] for n in ("a", "b")}
        chk.check("5. %s: both still hear the other's fast beats" % what, min(heard.values()) >= 20, str(heard))
    bad = {n: refused_beats(n) - bad0[n] for n in ("a", "b")}
    chk.check("5. no fast beat refused as unknown_key or bad_mac during the rotation", max(bad.values()) == 0,
              str(bad))
    chk.check("5. roles unchanged by the rotation", m("a", "ftpair_vip_owner") == 1
              and m("b", "ftpair_role", state="STANDBY_READY") == 1, str(roles()))
    # A key file that cannot be read: the whole reload is refused, the running keys stay.
    r0 = m("b", "ftpair_config_reloads_total", result="refused")
    set_beat_keys("b", [(2, key2), (3, os.path.join(L.RUN, "no-such.key"))])
    L.lab("signal", "b", "HUP")
    chk.check("5. a reload naming an unreadable key file is refused",
              L.wait_until(lambda: m("b", "ftpair_config_reloads_total", result="refused") > r0, 5, 0.05),
              L.node_log_tail("b", 5))
    set_beat_keys("b", [(2, key2)])
    heard0 = m("a", "ftpair_fast_beats_heard_total")
    time.sleep(0.5)
    chk.check("5. after the refused reload b still signs with key 2",
              m("a", "ftpair_fast_beats_heard_total") - heard0 >= 20 and refused_beats("a") == bad0["a"], "")


def parked_fault(chk):
    gen_b = m("b", "ftpair_generation")
    rb0 = m("b", "ftpair_role_transitions_rolled_back_total")
    watch = L.OwnerWatch(confirm=False, first="b")
    L.lab("signal", "b", "USR1")  # worker.test_hooks: b's worker stalls and cannot park
    time.sleep(0.3)
    rc, doc, err = L.ctl("a", "switchover", timeout=30)
    L.lab("signal", "b", "USR2")
    msg = (doc or {}).get("message", "") + err
    chk.check("6. the switchover to a stalled standby is aborted", rc != 0 and "aborted" in msg,
              "rc %d: %s" % (rc, msg[-300:]))
    chk.check("6. b's transition changed nothing and was counted as rolled back",
              m("b", "ftpair_generation") == gen_b
              and m("b", "ftpair_role_transitions_rolled_back_total") == rb0 + 1,
              "b generation %g (was %g), rolled back %g (was %g)" % (
                  m("b", "ftpair_generation"), gen_b, m("b", "ftpair_role_transitions_rolled_back_total"), rb0))
    back = L.wait_until(lambda: m("a", "ftpair_vip_owner") == 1 and m("a", "ftpair_replication_in_sync") == 1
                        and m("a", "ftpair_alarm", what="unprotected") == 0
                        and m("b", "ftpair_role", state="STANDBY_READY") == 1
                        and m("b", "ftpair_alarm", what="standby_not_in_sync") == 0, 10, 0.1)
    watch.stop()
    chk.check("6. a kept the role and the pair is protected again (b in sync, no alarm) within 10 s", back,
              "a owner %g in_sync %g unprotected %g; b ready %g" % (
                  m("a", "ftpair_vip_owner"), m("a", "ftpair_replication_in_sync"),
                  m("a", "ftpair_alarm", what="unprotected"), m("b", "ftpair_role", state="STANDBY_READY")))
    chk.check("6. never two owners", not watch.both, "%d samples" % len(watch.both))
    rc, doc, err = L.ctl("a", "switchover", timeout=30)
    chk.check("6. with b's worker released the switchover completes", rc == 0 and (doc or {}).get("ok"),
              "rc %d: %s %s" % (rc, doc, err))
    return wait_pair(chk, "b", "6. after the switchover")


def flows_during_kill(chk, lab):
    """The active is b, the standby a. Fills the table, polls Flows on a, kills b."""
    srv = lab.background("server", [L.PY, L.NATTOOL, "udp-reflect", "--port", UDP_PORT])
    chk.check("7. udp-reflect listening", srv.wait_line(lambda s: s.startswith("LISTENING udp"), 10),
              "; ".join(srv.snapshot()[-3:]))
    r = L.run_in("client", [L.PY, L.NATTOOL, "udp-flows", "--to", "%s:%d" % (L.SERVER_IP, UDP_PORT),
                            "--count", FLOWS, "--gap-ms", 0.2, "--timeout", 3, "--retries", 1], timeout=60)
    doc = L.last_json(r.stdout) or {}
    chk.check("7. %d UDP flows answered through b" % FLOWS, doc.get("answered", 0) >= FLOWS * 0.95,
              "%s %s" % (r.stdout[-200:], r.stderr[-300:]))
    ok = L.wait_until(lambda: m("a", "ftpair_flows") >= FLOWS * 0.95, 5, 0.1)
    chk.check("7. the standby a holds them", ok, "a flows %g" % m("a", "ftpair_flows"))
    calls, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            rc, d, _ = L.ctl("a", "flows", "--limit", 0, timeout=20)
            calls.append((time.monotonic(), rc, len((d or {}).get("flows", []))))
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    L.lab("signal", "b", "KILL", check=False)
    took = L.wait_until(lambda: L.vip_owner("a") == 1, 10, 0.02)
    t1 = time.monotonic()
    time.sleep(0.3)
    stop.set()
    t.join(30)
    during = [c for c in calls if t0 - 0.5 <= c[0]]
    full = [c for c in calls if c[1] == 0 and c[2] >= FLOWS * 0.95]
    chk.check("7. Flows dumps of the whole table ran on a while b was killed", len(during) >= 2 and full,
              "%d calls after the kill - 0.5 s, %d full dumps; last %s" % (len(during), len(full), calls[-1:]))
    chk.check("7. SIGKILL of b: a took over within %.1f s with Flows polled" % KILL_BOUND_S,
              took and t1 - t0 <= KILL_BOUND_S, "after %.2f s" % (t1 - t0))


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
        st_a, st_b = L.status("a") or {}, L.status("b") or {}
        chk.check("status shows each node's peer as the beats show it, and no alarm once in sync",
                  st_a.get("peer_role") == "STANDBY_READY" and st_a.get("peer_reachable")
                  and st_b.get("peer_role") == "ACTIVE" and st_b.get("peer_reachable")
                  and not st_a.get("alarms") and not st_b.get("alarms"),
                  "a: %s %s %s; b: %s %s %s" % (st_a.get("peer_role"), st_a.get("peer_reachable"), st_a.get("alarms"),
                                               st_b.get("peer_role"), st_b.get("peer_reachable"), st_b.get("alarms")))
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

        # 5. key rotation, one node at a time, by SIGHUP
        rotation(chk)

        # 6. a fault while the workers are parked rolls back
        if not parked_fault(chk):
            return lab.exit_code()

        # 7. Flows on the standby does not delay a real failover
        flows_during_kill(chk, lab)

        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s/%s.log ----\n%s----" % (L.RUN, n, L.node_log_tail(n, 25)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
