#!/usr/bin/python3
"""A warm spare's pre-started daemon (control/spare.h, virt/spare_link.h), natively: ftpaird with
null ports started as a spare (`--await-identity`), as ftpair-commission starts it in a spare guest
before the host claims it. No libvirt: the guest side of this runs in virt_reprotect.

  1. it builds its dataplane and says "ready"; its control plane (gRPC) is not up before the claim;
  2. bad lines are refused and it keeps waiting: an over-long line (dropped to its newline), an
     unknown request, a relative path, a config that does not load, a missing one, one whose
     dataplane differs from what it built (named in the refusal);
  3. a good config is taken: the same process then answers as the claimed node (node id, pid,
     gRPC address from that config), standby;
  4. SIGTERM before a claim stops it cleanly (exit 0); the init closing its end stops it (exit 1,
     with the reason in its log).

Exit 0 = pass, 1 = fail, 77 = skip."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import virtutil as V  # noqa: E402  (ctl_status only: no libvirt here)

REPO = os.path.dirname(os.path.dirname(HERE))
FTPAIRD = os.environ.get("FTPAIRD", os.path.join(REPO, "build", "control", "ftpaird"))
FTPAIRCTL = os.environ.get("FTPAIRCTL", os.path.join(REPO, "build", "tools", "ftpairctl", "ftpairctl"))
for path in (FTPAIRD, FTPAIRCTL):
    if not os.path.exists(path):
        print("FAIL: %s not built" % path)
        sys.exit(1)

failures = []
t_start = time.monotonic()


def log(msg):
    print("[%7.2f] %s" % (time.monotonic() - t_start, msg), flush=True)


def check(name, ok, detail=""):
    log("%s %s %s" % ("PASS" if ok else "FAIL", name, detail if not ok else ""))
    if not ok:
        failures.append(name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def config(node, grpc_port, state_dir, capacity=4096):
    # The EAL prefix is the test's own, so two runs of it (or a lab beside it) do not meet.
    return """node: {id: %s, role: standby, state_dir: %s}
dpdk: {mbufs: 2047, memory_mb: 64, file_prefix: ftpair-sparetest}
ports:
  inside: {device: "net_null0,no-rx=1", vip: 198.18.1.1/24}
  outside: {device: "net_null1,no-rx=1", vip: 198.18.2.1/24}
flows: {capacity: %d}
management: {grpc: "127.0.0.1:%d"}
peer: {grpc: "127.0.0.1:%d"}
failover: {fence: none, allow_fence_none: true}
""" % (node, state_dir, capacity, grpc_port, PEER_PORT)


class Spare:
    """ftpaird as a spare, given one end of a socket pair (its number on the command line); the
    other end is ours."""

    def __init__(self, cfg_path, logname):
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.log = open(os.path.join(work, logname), "w+")
        self.proc = subprocess.Popen([FTPAIRD, "-c", cfg_path, "--await-identity", str(theirs.fileno())],
                                     stdout=self.log, stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),))
        theirs.close()
        self.buf = b""

    def line(self, timeout):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out.decode()

    def ask(self, text, timeout=20):
        self.sock.sendall(text.encode() + b"\n")
        return self.line(timeout)

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()


def status(port):
    return V.ctl_status(FTPAIRCTL, "127.0.0.1:%d" % port)


work = tempfile.mkdtemp(prefix="ftpair-spare-")
PEER_PORT = free_port()  # nobody answers there: the claimed node waits as a configured standby
spare_port, node_port = free_port(), free_port()
paths = {}
for name, node, port, cap in (("spare", "spare-0", spare_port, 4096), ("b", "b", node_port, 4096),
                              ("bigger", "b", node_port, 8192)):
    paths[name] = os.path.join(work, name + ".yaml")
    with open(paths[name], "w") as f:
        f.write(config(node, port, os.path.join(work, "state-" + name), cap))
broken = os.path.join(work, "broken.yaml")
with open(broken, "w") as f:
    f.write("node: {id: b\n")

spares = []
try:
    # ---- 1. ready, no control plane yet ----
    sp = Spare(paths["spare"], "spare.log")
    spares.append(sp)
    ready = sp.line(60)
    check("the spare's daemon builds its dataplane and says ready", ready == "ready",
          "%r; log:\n%s" % (ready, sp.log_text()[-2000:]))
    check("it logs what it built", "warm spare: dataplane built (1 worker" in sp.log_text(), sp.log_text()[-1500:])
    check("no control plane before the claim (nothing listens on the spare's gRPC address)",
          not listening(spare_port) and not listening(node_port))

    # ---- 2. bad lines are refused, the wait goes on ----
    for line, want in (("x" * 5000, "refused: line longer than 4096 bytes"),
                       ("hello", "refused: unknown request 'hello'"),  # nothing of the long line is left
                       ("config relative.yaml", "refused: config path 'relative.yaml' is not absolute"),
                       ("config " + broken, "refused: "),
                       ("config " + os.path.join(work, "missing.yaml"), "refused: "),
                       ("config " + paths["bigger"], "refused: the claimed node's config changes what this spare's "
                                                     "dataplane was built with: flows.capacity")):
        got = sp.ask(line)
        check("refused: %s" % line.replace(work, "<work>")[:60], got is not None and got.startswith(want) and
              (want != "refused: " or len(got) > len(want)), repr(got))
    check("still waiting after the refusals", sp.proc.poll() is None and not listening(node_port))

    # ---- 3. the claimed node's config is taken by the same process ----
    t0 = time.monotonic()
    got = sp.ask("config " + paths["b"])
    check("the claimed node's config is taken", got == "ok", repr(got))
    st, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        st = status(node_port)
        if st and st.get("role") == "standby":
            break
        time.sleep(0.05)
    took = time.monotonic() - t0
    check("the same process answers as node b, standby, at b's gRPC address",
          st is not None and st.get("node_id") == "b" and st.get("role") == "standby" and int(st.get("pid", 0)) == sp.proc.pid,
          "%s; log:\n%s" % (st, sp.log_text()[-2000:]))
    log("claimed to standby: %.3f s" % took)
    check("the spare's address is not served", not listening(spare_port))
    check("its log says it was claimed", "warm spare claimed: node b" in sp.log_text(), sp.log_text()[-1500:])
    sp.proc.send_signal(signal.SIGTERM)
    rc = sp.proc.wait(30)
    check("the claimed node stops on SIGTERM", rc == 0, "rc %s" % rc)

    # ---- 4. stopped before a claim ----
    sp2 = Spare(paths["spare"], "spare2.log")
    spares.append(sp2)
    check("a second spare says ready", sp2.line(60) == "ready", sp2.log_text()[-1500:])
    sp2.proc.send_signal(signal.SIGTERM)
    rc = sp2.proc.wait(30)
    check("SIGTERM before a claim stops it cleanly (exit 0)", rc == 0 and "stopped before it was claimed" in sp2.log_text(),
          "rc %s; log:\n%s" % (rc, sp2.log_text()[-1500:]))
    sp3 = Spare(paths["spare"], "spare3.log")
    spares.append(sp3)
    check("a third spare says ready", sp3.line(60) == "ready", sp3.log_text()[-1500:])
    sp3.sock.close()
    rc = sp3.proc.wait(30)
    check("the init closing its end stops the spare (exit 1, the reason logged)",
          rc == 1 and "the other end closed the link" in sp3.log_text(), "rc %s; log:\n%s" % (rc, sp3.log_text()[-1500:]))
finally:
    for sp in spares:
        try:
            sp.stop()
        except Exception as e:  # noqa: BLE001 -- cleanup goes on
            log("stop: %s" % e)
    shutil.rmtree(work, ignore_errors=True)

log("%d failed" % len(failures))
sys.exit(1 if failures else 0)
