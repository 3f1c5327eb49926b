#!/usr/bin/python3
"""Lab integration test: a node on two workers, paired with a node on one.

    client  (198.18.1.10) --LAN-- ftpaird a: worker.count 2 (2 queue pairs per port)
    client2 (198.18.1.11) --LAN-- ftpaird b: worker.count 1
                                  (each replicates to the other in record format 4,
                                   strict mode: output waits for the standby's copy)

Each LAN host's flows live on one worker, host_bucket(address) % workers (computed here as
the dataplane does: CRC32-C of the address, 64 buckets), so the two clients land on different
workers of a. Checked:
  1. a reports 2 workers, b 1; b joins and is in sync.
  2. Byte-checking kernel TCP echo connections from both LAN hosts through a: every flow in a's
     dump sits on the worker that owns its host, both workers hold flows, and the per-worker
     metrics (flows, loops, hand-offs) are exposed with a worker label.
  3. After a final checkpoint, b (one worker) holds exactly a's flows (the union of a's two
     tables), each on b's only worker.
  4. SIGKILL of a (two workers, strict mode) under load, 16 connections: b (one worker) takes
     over, every connection survives with every byte checked, never two actives.
  5. a restarts on two workers and joins b as standby: its copy of b's table is split over
     its two workers by host; a switchover back to a (one worker -> two, the in-service move
     to more cores) keeps every connection.
Exit 0 pass, 1 fail, 77 skip.
"""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402

TWO = {"FTPAIR_LAB_WORKERS": "2"}
STRICT = ("--set", "checkpoint.mode=strict")  # output commit: nothing leaves before the standby has it
RATE = 65536
m = L.node_metric


def host_worker(ip, workers):
    """dp::host_bucket(in_ip) % workers: CRC32-C (no final inversion) of the address as the
    dataplane holds it (network order), seeded 0x6a09e667, low 6 bits."""
    crc = 0x6a09e667
    for b in socket.inet_aton(ip):
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return (crc & 63) % workers


def flows_of(node):
    rc, doc, err = L.ctl(node, "flows", timeout=10, rpc_timeout=None)
    return (doc.get("flows", []) if rc == 0 and doc else None), err


def wait_pair(chk, active, what, timeout=20):
    standby = "b" if active == "a" else "a"
    ok = L.wait_until(lambda: m(active, "ftpair_vip_owner") == 1 and m(active, "ftpair_replication_in_sync") == 1
                      and m(standby, "ftpair_role", state="STANDBY_READY") == 1, timeout, 0.2)
    return chk.check("%s: %s active, %s standby in sync" % (what, active, standby), ok)


def both_clients(lab, conns, seconds):
    return [L.start_client(lab, conns, seconds, rate=RATE, host=h) for h in ("client", "client2")]


def all_survived(chk, what, clients, conns, timeout):
    for h, c in zip(("client", "client2"), clients):
        j = L.client_result(c, timeout)
        chk.check("%s: all %d connections from %s survived, every byte checked" % (what, conns, h),
                  j and j.get("ok") == conns and j.get("reset", 0) == 0 and j.get("corrupt", 0) == 0, str(j))


def check_homes(chk, node, workers, what):
    flows, err = flows_of(node)
    if not chk.check("%s: %s's flows dumped" % (what, node), flows, err):
        return
    lan = [f for f in flows if f.get("inside", "").split(":")[0] in (L.CLIENT_IP, L.CLIENT2_IP)]
    wrong = [f for f in lan if f.get("worker", 0) != host_worker(f["inside"].split(":")[0], workers)]
    used = sorted({f.get("worker", 0) for f in lan})
    chk.check("%s: every LAN flow on %s sits on the worker that owns its host" % (what, node),
              lan and not wrong, "%d flows, %d misplaced, first: %s" % (len(lan), len(wrong), wrong[:1]))
    chk.check("%s: %s's flows use %d worker(s)" % (what, node, workers), used == list(range(workers)), str(used))


def main():
    L.require_lab(need=())
    if not os.access(L.FTPAIRCTL, os.X_OK):
        L.skip("ftpairctl not built at %s" % L.FTPAIRCTL)
    if host_worker(L.CLIENT_IP, 2) == host_worker(L.CLIENT2_IP, 2):
        L.skip("the two LAN hosts share a worker: the test cannot show two workers in use")
    with L.LabSession(deadline_s=170) as lab:
        chk = lab.checker
        lab.setup()
        lab.start_node("a", "--role", "active", *STRICT, env=TWO)
        lab.start_node("b", "--role", "standby", *STRICT)
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", L.ECHO_PORT])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)

        # 1. the two nodes' worker counts, and the pair in sync
        sa, sb = L.status("a") or {}, L.status("b") or {}
        chk.check("a runs 2 workers, b 1", sa.get("workers") == 2 and sb.get("workers", 1) in (0, 1),
                  "a=%s b=%s" % (sa.get("workers"), sb.get("workers")))
        chk.check("strict mode on a", (sa.get("sync") or {}).get("mode") == "strict", str(sa.get("sync")))
        if not wait_pair(chk, "a", "start"):
            return lab.exit_code()

        # 2. traffic from both LAN hosts through a; each host's flows on its worker
        clients = both_clients(lab, 8, 6)
        time.sleep(3)
        check_homes(chk, "a", 2, "2 workers")
        s = L.scrape("a")
        per = [L.metric(s, "ftpair_worker_flows", worker=str(w)) for w in (0, 1)]
        chk.check("ftpair_worker_flows{worker} > 0 for both of a's workers", all(v > 0 for v in per), str(per))
        loops = [L.metric(s, "ftpair_worker_loops_total", worker=str(w)) for w in (0, 1)]
        chk.check("ftpair_worker_loops_total{worker} counts both workers", all(v > 0 for v in loops), str(loops))
        # The kernel's fanout picks a queue by its own flow hash, not by host: some packets
        # reach the other worker and are handed over, each counted.
        ho = [L.metric(s, "ftpair_worker_handoffs_total", worker=str(w)) for w in (0, 1)]
        hin = [L.metric(s, "ftpair_worker_handed_in_total", worker=str(w)) for w in (0, 1)]
        chk.check("ftpair_worker_handoffs_total{worker}: packets handed over, each taken in",
                  sum(ho) > 0 and abs(sum(ho) - sum(hin)) <= 64, "handed %s, taken in %s" % (ho, hin))
        all_survived(chk, "2 workers", clients, 8, 30)

        # 3. b, one worker, holds the union of a's two tables
        rc, doc, err = L.ctl("a", "checkpoint", timeout=10, rpc_timeout=None)
        chk.check("final checkpoint acknowledged by b", rc == 0, err or str(doc))
        fa, _ = flows_of("a")
        fb, _ = flows_of("b")
        key = lambda f: (f.get("proto"), f.get("inside"), f.get("outside"), f.get("nat"), f.get("state"))  # noqa: E731
        chk.check("b's one table holds exactly a's two tables' flows",
                  fa and fb is not None and sorted(map(key, fa)) == sorted(map(key, fb)),
                  "a=%s b=%s" % (fa and len(fa), fb and len(fb)))
        chk.check("b holds them all on its one worker", fb is not None and all(f.get("worker", 0) == 0 for f in fb))

        # 4. SIGKILL of a (two workers): b (one) takes over under load
        clients = both_clients(lab, 8, 9)
        time.sleep(2.5)
        watch = L.OwnerWatch(confirm=False, first="b")
        L.lab("signal", "a", "KILL", check=False)
        took = L.wait_until(lambda: m("b", "ftpair_vip_owner") == 1, 5, 0.01)
        all_survived(chk, "failover 2 -> 1 worker", clients, 8, 40)
        watch.stop()
        chk.check("failover 2 -> 1 worker: b took over", took)
        chk.check("failover 2 -> 1 worker: never two actives", not watch.both, "%d samples" % len(watch.both))

        # 5. a back on two workers as standby, then the switchover to it (1 -> 2 workers)
        L.lab("stop", "a", check=False)
        lab.start_node("a", *STRICT, env=TWO)
        wait_pair(chk, "b", "a rejoined on 2 workers")
        clients = both_clients(lab, 8, 8)
        time.sleep(2.5)
        check_homes(chk, "a", 2, "a's copy as standby")
        watch = L.OwnerWatch(confirm=False, first="a")
        rc, doc, err = L.ctl("b", "switchover", timeout=15, rpc_timeout=10)
        chk.check("switchover 1 -> 2 workers: ftpairctl exit 0", rc == 0, err or str(doc))
        all_survived(chk, "switchover 1 -> 2 workers", clients, 8, 40)
        watch.stop()
        chk.check("switchover 1 -> 2 workers: never two actives", not watch.both)
        wait_pair(chk, "a", "after the switchover to a")
        if chk.failed:
            for n in ("a", "b"):
                print("---- events in %s.log ----\n%s----" % (n, L.node_log_events(n, 25)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
