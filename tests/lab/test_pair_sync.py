#!/usr/bin/python3
"""Lab integration test: replication between the two nodes under real traffic.

    client --LAN-- ftpaird a (active)  --WAN-- server
                   ftpaird b (standby)   (hot copy over gRPC Sync on the management link)

Checks
  1. b joins, gets a full sync, is in sync; it transmits nothing (a standby never forwards).
  2. Long-lived kernel TCP connections run through a; after they stop and a final
     checkpoint, the Flows dumps of a and b are identical (slot, tuple, NAT, state).
  3. SIGKILL of b while traffic flows: a keeps forwarding all the time b is down (its
     forwarded counter rises, no connection breaks); b restarted gets a full resync while
     traffic continues, and the tables are identical again at the end.
  4. SIGSTOP of b on an idle stream (no epoch to send; b's kernel still holds the connection
     open, so no RST ever comes, as with a VM that vanished): a notices within a few seconds
     (HTTP/2 keepalive) instead of reporting b in sync forever; after SIGCONT, b gets a full
     resync and stays standby.
Exit 0 pass, 1 fail, 77 skip.
"""

import os
import signal
import sys
import threading
import re
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402


def flows_of(node):
    rc, doc, err = L.ctl(node, "flows", timeout=10, rpc_timeout=None)
    if rc != 0 or doc is None:
        return None, err
    rows = sorted((f.get("slot", 0), f.get("proto"), f.get("inside"), f.get("outside"), f.get("nat"),
                   f.get("state"), f.get("flags", 0)) for f in doc.get("flows", []))
    return rows, ""


def m(node, name, **labels):
    return L.node_metric(node, name, scrape_timeout=2.0, **labels)


def final_checkpoint_and_compare(chk, what):
    rc, doc, err = L.ctl("a", "checkpoint", timeout=10, rpc_timeout=None)
    chk.check("final checkpoint acknowledged by b (%s)" % what, rc == 0, err or str(doc))
    fa, ea = flows_of("a")
    fb, eb = flows_of("b")
    ok = fa is not None and fb is not None and fa == fb and len(fa) > 0
    detail = "a=%s b=%s" % (len(fa) if fa is not None else ea, len(fb) if fb is not None else eb)
    if fa is not None and fb is not None and fa != fb:
        diff = sorted(set(fa) ^ set(fb))[:5]
        detail += " first differences: %s" % diff
    chk.check("Flows dumps of a and b identical (%s)" % what, ok, detail)


def main():
    L.require_lab(need=())
    if not os.access(L.FTPAIRCTL, os.X_OK):
        L.skip("ftpairctl not built at %s" % L.FTPAIRCTL)
    with L.LabSession(deadline_s=110) as lab:
        chk = lab.checker
        lab.setup()
        lab.start_node("a", "--role", "active")
        lab.start_node("b", "--role", "standby")
        chk.check("b in sync after joining (full sync)",
                  L.wait_until(lambda: m("a", "ftpair_replication_in_sync") == 1, 10),
                  "a sees in_sync=%s" % m("a", "ftpair_replication_in_sync"))

        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", L.ECHO_PORT])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)

        # 2. traffic through a, then identical tables
        c1 = L.start_client(lab, 24, 5, op_timeout=None)
        j = L.client_result(c1, 30)
        chk.check("24 TCP connections through a: every byte echoed", j and j.get("ok") == 24, str(j))
        final_checkpoint_and_compare(chk, "after traffic")
        chk.check("standby b transmitted nothing",
                  m("b", "ftpair_port_tx_packets_total", port="inside") == 0 and
                  m("b", "ftpair_port_tx_packets_total", port="outside") == 0,
                  "b tx inside=%g outside=%g" % (m("b", "ftpair_port_tx_packets_total", port="inside"),
                                                 m("b", "ftpair_port_tx_packets_total", port="outside")))

        # 3. kill the standby under traffic; a never stops; b resyncs
        full_before = m("a", "ftpair_replication_full_syncs_total")
        c2 = L.start_client(lab, 16, 14, op_timeout=None)
        time.sleep(2)
        lab_pid = L.node_pid("b")
        L.lab("signal", "b", "KILL", check=False)
        chk.check("b killed", L.wait_until(lambda: not L.pid_alive(lab_pid), 5), "pid %s" % lab_pid)
        chk.check("a notices the standby is gone",
                  L.wait_until(lambda: m("a", "ftpair_replication_connected") == 0, 5))
        fwd0 = m("a", "ftpair_forwarded_packets_total", port="inside")
        time.sleep(2)
        fwd1 = m("a", "ftpair_forwarded_packets_total", port="inside")
        chk.check("a keeps forwarding while b is down", fwd1 > fwd0, "forwarded %g -> %g" % (fwd0, fwd1))
        L.lab("stop", "b", check=False)  # clears the pidfile of the dead node
        # While b starts, its /metrics answers before it has taken its role: it must never
        # report owning the virtual addresses (a answers for them all along).
        seen, stop_ev = {"owner": 0, "scrapes": 0}, threading.Event()

        def watch_b():
            while not stop_ev.is_set():
                v = L.vip_owner("b")
                if v is not None:
                    seen["scrapes"] += 1
                    seen["owner"] += v == 1
                else:
                    time.sleep(0.002)
        w = threading.Thread(target=watch_b, daemon=True)
        w.start()
        lab.start_node("b", "--role", "standby")
        time.sleep(0.5)
        stop_ev.set()
        w.join(2)
        chk.check("a restarting b never reports owning the VIPs", seen["owner"] == 0 and seen["scrapes"] > 0,
                  "%d of %d scrapes said owner" % (seen["owner"], seen["scrapes"]))
        chk.check("b back in sync after restart (full resync under traffic)",
                  L.wait_until(lambda: m("a", "ftpair_replication_in_sync") == 1 and
                               m("a", "ftpair_replication_full_syncs_total") > full_before, 15),
                  "full syncs %g -> %g" % (full_before, m("a", "ftpair_replication_full_syncs_total")))
        chk.check("traffic still flowing during the resync",
                  c2.alive() and m("a", "ftpair_forwarded_packets_total", port="inside") > fwd1)
        j = L.client_result(c2, 40)
        chk.check("16 TCP connections survived the standby's death: every byte echoed",
                  j and j.get("ok") == 16 and j.get("reset", 0) == 0 and j.get("corrupt", 0) == 0, str(j))
        final_checkpoint_and_compare(chk, "after the standby's restart")
        chk.check("b rejected nothing", sum(v for (n, _), v in (L.scrape("b") or {}).items()
                                             if n == "ftpair_sync_rejected_total") == 0)
        # Every epoch since the restart carried the active's table fingerprint, and b's copy
        # matched it each time (a silent divergence would count, raise the alarm and resync).
        chk.check("b compared the table fingerprint of every epoch and never diverged",
                  (m("b", "ftpair_sync_fingerprints_checked_total") or 0) > 10
                  and m("b", "ftpair_sync_divergence_total") == 0,
                  "checked %s, diverged %s" % (m("b", "ftpair_sync_fingerprints_checked_total"),
                                               m("b", "ftpair_sync_divergence_total")))

        # 3b. A corrupted standby caught and resynced while traffic flows: SIGRTMIN is ftpaird's
        # test hook (worker.test_hooks) that gets one flow's state wrong in b's copy, as a faulty
        # apply would. The next epoch's fingerprint finds it, b refuses the stream, a's full sync
        # replaces b's table, and no connection notices.
        c3 = L.start_client(lab, 16, 8, op_timeout=None)
        time.sleep(2)
        full_before = m("a", "ftpair_replication_full_syncs_total")
        L.lab("signal", "b", "RTMIN")
        chk.check("the corrupted record was found: b counts one divergence",
                  L.wait_until(lambda: m("b", "ftpair_sync_divergence_total") == 1, 5),
                  "divergences %s; b's log:\n%s" % (m("b", "ftpair_sync_divergence_total"), L.node_log_events("b")))
        log_b = L.node_log_tail("b", 400)
        hooked = re.search(r"corrupted the flow in slot \d+ of worker \d+'s table \(the table holds epoch (\d+)\)", log_b)
        found = re.search(r"epoch (\d+): this table diverged from the active's at the cut", log_b)
        chk.check("found at the next epoch after the damage (divergence_detect_epochs 1)",
                  hooked and found and int(found.group(1)) == int(hooked.group(1)) + 1,
                  "hook %s, found %s" % (hooked and hooked.group(0), found and found.group(0)))
        chk.check("a resynced b with a full sync, and b is in sync again",
                  L.wait_until(lambda: m("a", "ftpair_replication_full_syncs_total") > full_before and
                               m("a", "ftpair_replication_in_sync") == 1 and
                               (L.status("b") or {}).get("sync", {}).get("diverged_epoch", 1) == 0, 10),
                  "full syncs %g -> %g, b: %s" % (full_before, m("a", "ftpair_replication_full_syncs_total"),
                                                   (L.status("b") or {}).get("sync")))
        j = L.client_result(c3, 30)
        chk.check("16 TCP connections through the divergence and the resync: every byte echoed",
                  j and j.get("ok") == 16 and j.get("reset", 0) == 0 and j.get("corrupt", 0) == 0, str(j))
        final_checkpoint_and_compare(chk, "after the resync of the corrupted copy")

        # 4. A standby that stops answering without closing its connection.
        # The clients are done: nothing to checkpoint. gRPC's default stops keepalive pings after 2
        # without data (then a frozen peer is never noticed), and a server answers pings more
        # often than every 5 min without data by GOAWAY (then the idle stream is torn down and
        # resynced every few seconds). Neither may happen: the idle stream stays up, unchanged.
        gen_a = (L.status("a") or {}).get("generation")
        full_before = m("a", "ftpair_replication_full_syncs_total")
        time.sleep(4)
        chk.check("an idle stream stays up (no GOAWAY for its keepalive pings, no resync)",
                  m("a", "ftpair_replication_connected") == 1 and m("a", "ftpair_replication_in_sync") == 1 and
                  m("a", "ftpair_replication_full_syncs_total") == full_before,
                  "full syncs %g -> %g" % (full_before, m("a", "ftpair_replication_full_syncs_total")))
        pid_b = L.node_pid("b")
        os.kill(pid_b, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            noticed = L.wait_until(lambda: m("a", "ftpair_replication_connected") == 0 and
                                   m("a", "ftpair_replication_in_sync") == 0, 8)
            chk.check("a notices a frozen standby on an idle stream (no RST)", noticed,
                      "after %.1f s" % (time.monotonic() - t0))
        finally:
            os.kill(pid_b, signal.SIGCONT)
        chk.check("the thawed b gets a full resync",
                  L.wait_until(lambda: m("a", "ftpair_replication_in_sync") == 1 and
                               m("a", "ftpair_replication_full_syncs_total") > full_before, 15),
                  "full syncs %g -> %g" % (full_before, m("a", "ftpair_replication_full_syncs_total")))
        sa, sb = L.status("a") or {}, L.status("b") or {}
        chk.check("roles unchanged after the freeze: a active (same generation), b standby",
                  sa.get("role") == "active" and sa.get("generation") == gen_a and sb.get("role") == "standby",
                  "a %s gen %s->%s, b %s" % (sa.get("role"), gen_a, sa.get("generation"), sb.get("role")))
        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s.log ----\n%s----" % (n, L.node_log_tail(n)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
