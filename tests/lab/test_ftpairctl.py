#!/usr/bin/python3
"""ftpairctl end to end: the operator CLI against real ftpaird nodes, and its exit codes.

Part 1 (no lab, no root): exit codes and messages without a daemon
  - bad arguments exit 2 (unknown command, bad --addr, negative --limit, --timeout 0, ...)
  - nothing listening: exit 3, "cannot reach ftpaird at ADDR (is it running?)"
  - a listener that never answers: exit 3, "did not answer within N s", after about N s
Part 2 (the pair lab, root): a active, b standby
  - status (text and --json, proto field names), flows table and "N of TOTAL flows at epoch E"
    under real traffic, flows --limit, checkpoint refused on the standby (exit 1,
    "checkpoint refused:"), config (the YAML), watch --count --json
  - switchover a -> b and back (exit 0, roles follow)
  - operator checkpoints on the active are acknowledged, and none of these calls makes the
    standby take over
  - b stopped: exit 3 "cannot reach"; a stopped with SIGSTOP: exit 3 "did not answer within"
  - status --wait-in-sync (a long poll): without a standby, the status and exit 1 "not in sync
    after N s" after N s; a fifth wait at once is refused (RESOURCE_EXHAUSTED); with b started
    again, a's wait (asked before b starts) ends with exit 0 once b is in sync; b's at once
Exit 0 pass, 1 fail. Part 2 is skipped (reported) when the lab cannot run here.
Always runs "ftpair-lab down" at the end of part 2, also on failure, exception or signal.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402

ECHO_PORT = 7000


def run(*args, timeout=20, env=None):
    """(rc, stdout, stderr, seconds) of one ftpairctl run."""
    e = dict(os.environ)
    for k in ("FTPAIR_ADDR", "FTPAIR_CACERT", "FTPAIR_CERT", "FTPAIR_KEY"):
        e.pop(k, None)
    e.update(env or {})
    t0 = time.monotonic()
    r = subprocess.run([L.FTPAIRCTL] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=e, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr.strip(), time.monotonic() - t0


def ctl(node, *args, timeout=20):
    return run("--addr", "%s:50051" % L.MGMT_IP[node], *args, timeout=timeout)


def ctl_json(node, *args, timeout=20):
    rc, out, err, _ = ctl(node, "--json", *args, timeout=timeout)
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    return rc, doc, err


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ part 1

def offline(chk):
    for args, what in [(["bogus"], "unknown command"),
                       ([], "no command"),
                       (["--addr", "nohost", "status"], "--addr without a port"),
                       (["--addr", "h:99999", "status"], "--addr with a bad port"),
                       (["--addr", "::1:5", "status"], "IPv6 without brackets"),
                       (["--timeout", "0", "status"], "--timeout 0"),
                       (["flows", "--limit", "-1"], "negative --limit"),
                       (["watch", "--interval", "abc"], "bad --interval"),
                       (["status", "extra"], "extra argument"),
                       (["--cert", "/etc/hostname", "status"], "--cert without --key"),
                       (["status", "--wait-in-sync", "0"], "--wait-in-sync 0"),
                       (["status", "--wait-in-sync", "11"], "--wait-in-sync above 10 s"),
                       (["status", "--wait-in-sync", "soon"], "--wait-in-sync not a number")]:
        rc, out, err, _ = run(*args)
        chk.check("bad arguments exit 2: %s" % what, rc == 2 and err.startswith("ftpairctl: ") and out == "",
                  "rc=%d err=%r" % (rc, err))
    rc, out, _, _ = run("--help")
    chk.check("--help exits 0", rc == 0 and "switchover" in out, "rc=%d" % rc)

    port = free_port()
    addr = "127.0.0.1:%d" % port
    for cmd in (["status"], ["--json", "flows"], ["switchover"], ["watch", "--count", "2"]):
        rc, out, err, _ = run("--addr", addr, *cmd)
        chk.check("nothing listening: %s exits 3 'cannot reach'" % " ".join(cmd),
                  rc == 3 and ("cannot reach ftpaird at %s (is it running?)" % addr) in err and out == "",
                  "rc=%d err=%r" % (rc, err))
    rc, _, err, _ = run("status", env={"FTPAIR_ADDR": addr})
    chk.check("FTPAIR_ADDR is the default address", rc == 3 and addr in err, err)

    # A listener that accepts TCP but never speaks HTTP/2: the deadline must end the call.
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    addr = "127.0.0.1:%d" % srv.getsockname()[1]
    try:
        rc, _, err, secs = run("--addr", addr, "--timeout", "1.5", "status")
        chk.check("silent listener: exit 3 'did not answer within 1.5 s' after ~1.5 s",
                  rc == 3 and ("ftpaird at %s did not answer within 1.5 s" % addr) in err and 1.3 < secs < 5,
                  "rc=%d after %.2f s: %r" % (rc, secs, err))
    finally:
        srv.close()


# ------------------------------------------------------------------ part 2

def lab_usable():
    if os.geteuid() != 0:
        return "lab needs root"
    if not os.access(L.FTPAIRD, os.X_OK):
        return "ftpaird not built at %s" % L.FTPAIRD
    try:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
        if r.returncode != 0:
            return "'ip netns' unusable"
    except (OSError, subprocess.TimeoutExpired) as e:
        return "'ip netns' unusable: %s" % e
    return None


def role_of(node):
    rc, doc, _ = ctl_json(node, "status", timeout=10)
    return doc.get("role") if rc == 0 and doc else None


def pair_intact(chk, when):
    """a still active, b still standby: ftpairctl's calls must never cause a failover."""
    ra, rb = role_of("a"), role_of("b")
    return chk.check("no failover %s (a %s, b %s)" % (when, ra, rb), ra == "active" and rb == "standby",
                     "b.log: " + L.node_log_tail("b", 3).strip().replace("\n", " | "))


def with_lab(lab, chk):
    lab.setup()
    lab.start_node("a", "--role", "active")
    lab.start_node("b", "--role", "standby")
    chk.check("b in sync (ftpairctl status of a)",
              L.wait_until(lambda: (ctl_json("a", "status")[1] or {}).get("sync", {}).get("in_sync"), 15))

    # status, as JSON and as text
    rc, doc, err = ctl_json("a", "status")
    chk.check("status --json of a: exit 0, one document with proto field names",
              rc == 0 and doc and doc.get("node_id") == "a" and doc.get("role") == "active" and
              isinstance(doc.get("generation"), int) and doc.get("flow_capacity", 0) > 0 and
              {"in_sync", "acked_epoch", "lag_epochs", "lag_bytes", "last_ack_age_seconds",
               "full_syncs", "full_sync_progress", "mode", "exposure_epochs"} <= set(doc.get("sync", {})),
              err or str(doc))
    # The standby's own word, carried on its stream: its node id (hello) and, from its last
    # acknowledgement, its state and flows (what ftpair-virt's wait for a replacement reads).
    sync_a = (doc or {}).get("sync", {})
    chk.check("status of a: its standby b says STANDBY_READY in its acknowledgements, on a stream up > 0 s",
              sync_a.get("peer_node") == "b" and sync_a.get("peer_state") == "ROLE_STATE_STANDBY_READY" and
              sync_a.get("stream_age_seconds", 0) > 0, str(sync_a))
    rc, doc, err = ctl_json("b", "status")
    chk.check("status --json of b: standby", rc == 0 and doc and doc.get("role") == "standby", err or str(doc))
    rc, out, err, _ = ctl("a", "status")
    lines = out.splitlines()
    cols = {m.start(2) for m in (re.match(r"^(\s*\S.*?)\s{2,}(\S.*)$", l) for l in lines) if m}
    chk.check("status text: one aligned block with role, generation, sync",
              rc == 0 and len(cols) == 1 and any(l.split()[:2] == ["role", "active"] for l in lines) and
              "generation" in out and "acked epoch" in out and "last checkpoint" in out, out + err)
    chk.check("status text: the standby's word ('standby says  node b, STANDBY_READY, N flows, stream up S s')",
              re.search(r"standby says\s+node b, STANDBY_READY, \d+ flows, stream up [0-9.]+ s", out) is not None, out)

    # flows under traffic
    echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", ECHO_PORT])
    echo.wait_line(lambda s: s.startswith("LISTENING"), 10)
    client = lab.background("client", [L.PY, L.TRAFFIC, "echo-client", "--host", L.SERVER_IP, "--port",
                                       ECHO_PORT, "--conns", 4, "--seconds", 8, "--json"])
    chk.check("4 flows appear on a",
              L.wait_until(lambda: (ctl_json("a", "flows")[1] or {}).get("total", 0) >= 4, 10))
    rc, out, err, _ = ctl("a", "flows")
    lines = out.splitlines()
    chk.check("flows text: header, rows, 'N of TOTAL flows at epoch E'",
              rc == 0 and lines and lines[0].split() == ["SLOT", "PROTO", "INSIDE", "OUTSIDE", "NAT", "STATE"] and
              any(" tcp " in l and L.CLIENT_IP in l for l in lines[1:]) and
              re.match(r"^\d+ of \d+ flows at epoch \d+$", lines[-1]), out + err)
    rc, out, err, _ = ctl("a", "flows", "--limit", "1")
    last = out.splitlines()[-1] if out else ""
    chk.check("flows --limit 1: one row", rc == 0 and last.startswith("1 of ") and len(out.splitlines()) == 3, out + err)
    rc, doc, err = ctl_json("a", "flows", "--limit", "2")
    chk.check("flows --json --limit 2", rc == 0 and doc and len(doc.get("flows", [])) == 2 and
              doc.get("total", 0) >= 4 and {"slot", "proto", "inside", "outside", "nat", "state"} <= set(doc["flows"][0]),
              err or str(doc))

    # config, watch, checkpoint refused on the standby (all read-only for the pair)
    rc, out, err, _ = ctl("b", "checkpoint")
    chk.check("checkpoint on the standby: exit 1 'checkpoint refused:'",
              rc == 1 and err.startswith("ftpairctl: checkpoint refused:"), "rc=%d %s" % (rc, err))
    rc, out, err, _ = ctl("a", "config")
    chk.check("config prints the YAML the daemon runs with", rc == 0 and "id: a" in out, out[:200] + err)
    rc, doc, err = ctl_json("a", "config")
    chk.check("config --json: the YAML in one document", rc == 0 and doc and "id: a" in doc.get("yaml", ""),
              err or str(doc)[:200])
    rc, doc, err = ctl_json("b", "checkpoint")
    chk.check("checkpoint --json on the standby: exit 1, nothing on stdout", rc == 1 and doc is None,
              "rc=%d %s" % (rc, err))
    rc, out, err, secs = ctl("a", "watch", "--count", "3", "--interval", "0.3", "--json")
    docs = []
    for l in out.splitlines():
        try:
            docs.append(json.loads(l))
        except ValueError:
            pass
    chk.check("watch --count 3 --json: three JSON lines, then exit 0",
              rc == 0 and len(docs) == 3 and len(out.splitlines()) == 3 and all(d.get("node_id") == "a" for d in docs),
              "rc=%d lines=%d %s" % (rc, len(out.splitlines()), err))
    rc, out, err, _ = ctl("a", "watch", "--count", "2", "--interval", "0.2")
    chk.check("watch without a terminal: one logfmt line per refresh",
              rc == 0 and len(out.splitlines()) == 2 and all("role=active" in l for l in out.splitlines()), out + err)
    client.stop()
    pair_intact(chk, "after status/flows/config/watch")

    # switchover and back
    rc, doc, err = ctl_json("a", "--timeout", "10", "switchover")
    chk.check("switchover a -> b: exit 0, ok", rc == 0 and doc and doc.get("ok") is True, err or str(doc))
    chk.check("b is active after the switchover", L.wait_until(lambda: role_of("b") == "active", 10), str(role_of("b")))
    chk.check("a is standby after the switchover", L.wait_until(lambda: role_of("a") == "standby", 10), str(role_of("a")))
    chk.check("b has a in sync again",
              L.wait_until(lambda: (ctl_json("b", "status")[1] or {}).get("sync", {}).get("in_sync"), 15))
    rc, out, err, _ = ctl("b", "--timeout", "10", "switchover")
    chk.check("switchover b -> a (text): exit 0", rc == 0 and out.strip() != "", "rc=%d %s%s" % (rc, out, err))
    chk.check("a is active again", L.wait_until(lambda: role_of("a") == "active", 10), str(role_of("a")))
    L.wait_until(lambda: (ctl_json("a", "status")[1] or {}).get("sync", {}).get("in_sync"), 15)

    # operator checkpoints on the active: acknowledged, and they must not look like a stall
    for i in range(3):
        rc, doc, err = ctl_json("a", "checkpoint")
        chk.check("checkpoint %d on the active: exit 0, epoch acknowledged" % (i + 1),
                  rc == 0 and doc and doc.get("epoch", 0) > 0 and doc.get("acked_epoch", 0) >= doc.get("epoch", 0),
                  err or str(doc))
        time.sleep(0.3)
    rc, out, err, _ = ctl("a", "checkpoint")
    chk.check("checkpoint (text) on the active: exit 0, epoch and acked epoch",
              rc == 0 and "epoch" in out and "acked epoch" in out, "rc=%d %s%s" % (rc, out, err))
    pair_intact(chk, "after 4 operator checkpoints")

    # unreachable and silent daemons
    L.lab("stop", "b", check=False)
    rc, out, err, _ = ctl("b", "status")
    chk.check("b stopped: exit 3 'cannot reach ftpaird at 198.18.3.2:50051'",
              rc == 3 and "cannot reach ftpaird at %s:50051 (is it running?)" % L.MGMT_IP["b"] in err, err)
    if not L.pid_alive(L.node_pid("a")):
        L.lab("stop", "a", check=False)
        lab.start_node("a", "--role", "active")
    wait_in_sync(lab, chk)
    L.lab("signal", "a", "STOP", check=False)
    try:
        rc, out, err, secs = ctl("a", "--timeout", "1", "status")
        chk.check("a stopped (SIGSTOP): exit 3 'did not answer within 1 s'",
                  rc == 3 and "ftpaird at %s:50051 did not answer within 1 s" % L.MGMT_IP["a"] in err and secs < 4,
                  "rc=%d after %.2f s: %s" % (rc, secs, err))
    finally:
        L.lab("signal", "a", "CONT", check=False)
    if chk.failed:
        for n in ("a", "b"):
            print("---- tail of %s.log ----\n%s----" % (n, L.node_log_tail(n)))


def wait_in_sync(lab, chk):
    """status --wait-in-sync, the long poll. b is stopped when this starts, and again when it ends."""
    chk.check("a sees that its standby is gone (not in sync)",
              L.wait_until(lambda: (ctl_json("a", "status")[1] or {}).get("sync", {}).get("in_sync") is not True, 10))
    rc, out, err, secs = ctl("a", "status", "--wait-in-sync", "1")
    chk.check("status --wait-in-sync 1 on a without a standby: the status, then exit 1 'not in sync after 1 s', "
              "after about 1 s", rc == 1 and "not in sync after 1 s (ACTIVE)" in err and "role" in out and
              0.9 <= secs < 4, "rc=%d after %.2f s: %s %s" % (rc, secs, err, out[:200]))
    # Each wait holds one of the daemon's gRPC threads: a fifth at once is answered at once.
    procs = [subprocess.Popen([L.FTPAIRCTL, "--addr", "%s:50051" % L.MGMT_IP["a"], "status", "--wait-in-sync", "3"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    t0 = time.monotonic()
    ended = {}
    while len(ended) < len(procs) and time.monotonic() - t0 < 20:
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = (time.monotonic() - t0, p.returncode, p.stderr.read().strip())
        time.sleep(0.01)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stderr.close()
    took = sorted(ended.values())
    chk.check("5 waits at once on a without a standby: the fifth is refused at once (exit 1, RESOURCE_EXHAUSTED), "
              "4 are held about 3 s and exit 1 'not in sync after 3 s'",
              len(took) == 5 and took[0][0] < 1.5 and took[0][1] == 1 and "status refused: this node holds 4 waits"
              in took[0][2] and "[RESOURCE_EXHAUSTED]" in took[0][2] and
              all(t >= 2.7 and rc == 1 and "not in sync after 3 s" in e for t, rc, e in took[1:]), str(took))
    # The wait is asked before b starts: it must end when b is in sync, not at its deadline.
    t0 = time.monotonic()
    waiter = subprocess.Popen([L.FTPAIRCTL, "--addr", "%s:50051" % L.MGMT_IP["a"], "--json", "status",
                               "--wait-in-sync", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        held = waiter.poll() is None
        lab.start_node("b", "--role", "standby")
        out, err = waiter.communicate(timeout=20)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    secs, rc = time.monotonic() - t0, waiter.returncode
    try:
        doc = json.loads(out) if rc == 0 and out.strip() else {}
    except ValueError:
        doc = {}
    chk.check("status --wait-in-sync 10 on a, asked before b starts again: held, then exit 0 once b is in sync, "
              "well before 10 s", held and rc == 0 and doc.get("sync", {}).get("in_sync") is True and
              doc.get("sync", {}).get("peer") == "%s:50051" % L.MGMT_IP["b"] and secs < 8,
              "held %s, rc=%d after %.2f s: %s %s" % (held, rc, secs, err, out[:300]))
    rc, out, err, secs = ctl("b", "--json", "status", "--wait-in-sync", "10")
    try:
        doc = json.loads(out) if rc == 0 and out.strip() else {}
    except ValueError:
        doc = {}
    chk.check("status --wait-in-sync 10 on b (a already in sync with it): exit 0 at once, STANDBY_READY and in sync",
              rc == 0 and doc.get("state") == "STANDBY_READY" and doc.get("sync", {}).get("in_sync") is True and
              secs < 2, "rc=%d after %.2f s: %s %s" % (rc, secs, err, out[:300]))
    L.lab("stop", "b", check=False)  # as before: the SIGSTOP below must not make b take over


def main():
    if not os.access(L.FTPAIRCTL, os.X_OK):
        L.skip("ftpairctl not built at %s" % L.FTPAIRCTL)
    why = lab_usable()
    if why:
        chk = L.Checker()
        offline(chk)
        chk.skip("ftpairctl against the pair lab", why)
        chk.summary()
        return 0 if chk.failed == 0 else 1
    with L.LabSession(deadline_s=110) as lab:
        offline(lab.checker)
        with_lab(lab, lab.checker)
    return lab.exit_code()


if __name__ == "__main__":
    sys.exit(main())
