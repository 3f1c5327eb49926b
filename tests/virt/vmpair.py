"""The VM pair with traffic through it, shared by tests/virt/test_virt_failover.py and the bench
(tests/virt/vm_pair_bench.py): two TCG guests running ftpaird on DPDK's net_virtio PMD, a client
namespace on their LAN bridge and a server namespace on their WAN bridge, byte-checked TCP
connections (tools/lab/traffic.py) through the active guest, and the daemons' status over gRPC.

    import vmpair as P
    P.require()
    with V.VirtSession(prefix=P.PAIR, libvirt_tcp=True) as s:
        spec = P.deploy(s)          # networks, initramfs, spec, ftpair-virt deploy
        ...
"""

import glob
import json
import os
import subprocess
import sys
import threading
import time

import virtutil as V

KERNELS = sorted(glob.glob("/boot/vmlinuz-*"))
GUEST_FTPAIRD = os.environ.get("FTPAIRD_GUEST", os.path.join(V.REPO, "build-guest", "control", "ftpaird"))
FTPAIRCTL = os.environ.get("FTPAIRCTL", os.path.join(os.path.dirname(os.path.dirname(V.FTPAIR_VIRT)), "tools",
                                                     "ftpairctl", "ftpairctl"))
TRAFFIC = os.path.join(V.REPO, "tools", "lab", "traffic.py")

CONNS = int(os.environ.get("FTPAIR_VIRT_CONNS", "8"))
PORT = 50051
PAIR = "ftvf"
LAN, WAN, CLIENT_NS, SERVER_NS = "ftvf-lan", "ftvf-wan", "ftvf-client", "ftvf-server"
INSIDE_VIP, CLIENT_IP = "198.19.250.1", "198.19.250.10"
OUTSIDE_VIP, SERVER_IP = "198.19.251.1", "198.19.251.10"
ECHO_PORT = 7000


def sh(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


def nets_down():
    """Removes the bridges, the namespaces and the veths (a namespace's removal frees its end of
    a veth only later, in the kernel's own time: the host end is deleted explicitly)."""
    for ns in (CLIENT_NS, SERVER_NS):
        sh("ip", "netns", "del", ns)
    for link in ("ftvf-c0", "ftvf-s0", LAN, WAN):
        sh("ip", "link", "del", link)
    for _ in range(50):
        links = sh("ip", "-o", "link", "show").stdout
        if "ftvf-c0" not in links and "ftvf-s0" not in links:
            break
        time.sleep(0.1)


def nets_up(s):
    """The guests' LAN and WAN: host bridges, a client namespace on the LAN (default route via the
    inside VIP) and a server namespace on the WAN (the NAT's outside address is on its subnet)."""
    cmds = []
    for br, ns, veth, ip, gw in ((LAN, CLIENT_NS, "ftvf-c", CLIENT_IP, INSIDE_VIP),
                                 (WAN, SERVER_NS, "ftvf-s", SERVER_IP, None)):
        cmds += [["ip", "link", "add", br, "type", "bridge"], ["ip", "link", "set", br, "up"],
                 ["ip", "netns", "add", ns],
                 ["ip", "link", "add", veth + "0", "type", "veth", "peer", "name", veth + "1"],
                 ["ip", "link", "set", veth + "0", "master", br, "up"],
                 ["ip", "link", "set", veth + "1", "netns", ns],
                 ["ip", "-n", ns, "addr", "add", ip + "/24", "dev", veth + "1"],
                 ["ip", "-n", ns, "link", "set", veth + "1", "up"],
                 ["ip", "-n", ns, "link", "set", "lo", "up"]]
        if gw:
            cmds.append(["ip", "-n", ns, "route", "add", "default", "via", gw])
    for argv in cmds:
        p = sh(*argv)
        if p.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(argv), p.stderr.strip()))
    s.on_exit.append(["ip", "netns", "del", CLIENT_NS])
    s.on_exit.append(["ip", "netns", "del", SERVER_NS])
    s.on_exit.append(["ip", "link", "del", LAN])
    s.on_exit.append(["ip", "link", "del", WAN])


def status(ip, timeout=2):
    return V.ctl_status(FTPAIRCTL, "%s:%d" % (ip, PORT), timeout)


def wait_for(what, pred, timeout, step=0.5):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        last = pred()
        if last:
            return last, time.monotonic() - t0
        time.sleep(step)
    V.log("timed out after %.0f s waiting for %s" % (timeout, what))
    return None, time.monotonic() - t0


class Watch(threading.Thread):
    """Two actives at once: each sample asks one node, the other, then the first again (the order
    alternates), and counts it when all three answers say active. Two answers in a row cannot
    tell a handover (the old active answered just before the new one took over) from an overlap;
    the third can. An old active that says DRAINING to a newer ACTIVE is handing over
    (_both_active)."""

    def __init__(self, ips):
        super().__init__(daemon=True)
        self.ips, self.stop, self.both, self.samples = ips, False, [], 0
        self.active_since = {}

    def _role(self, ip):
        st = status(ip, timeout=1)
        role = st.get("role") if st else None
        if role == "active" and ip not in self.active_since:
            self.active_since[ip] = time.monotonic()
        elif role != "active":
            self.active_since.pop(ip, None)
        return role, (st or {}).get("state"), (st or {}).get("generation")

    @staticmethod
    def _both_active(p, q):
        """Two answers (role, state, generation) that say two actives. A node says DRAINING only
        once it has released the virtual addresses (RoleManager::drain): during a switchover the
        old active, DRAINING at its generation, yields to the new one, ACTIVE at a higher one.
        Status reports a DRAINING node's role as "active", so that pair alone is a handover, not
        two actives; every other pair of "active" answers counts, as before."""
        if p[0] != "active" or q[0] != "active":
            return False
        for d, o in ((p, q), (q, p)):
            if d[1] == "DRAINING" and o[1] == "ACTIVE" and (d[2] or 0) < (o[2] or 0):
                return False
        return True

    def run(self):
        while not self.stop:
            x, y = self.ips if self.samples % 2 == 0 else self.ips[::-1]
            first, other, again = self._role(x), self._role(y), self._role(x)
            self.samples += 1
            if self._both_active(first, other) and self._both_active(again, other):
                self.both.append((time.monotonic(), x, first, y, other, again))
            time.sleep(0.2)


def serial_tail(s, name, n=25):
    path = os.path.join(s.dir, name)
    if not os.path.exists(path):
        return "(no serial log %s)" % path
    return "".join(open(path, errors="replace").readlines()[-n:])




def require():
    """Root, libvirt, a guest kernel and the built parts; exits 77 (skip) or 1 (fail) otherwise."""
    V.require()
    if not KERNELS:
        print("SKIP: no /boot/vmlinuz-* (tools/install-deps.sh: linux-image-cloud-amd64)")
        sys.exit(V.SKIP)
    for path, what in ((V.FTPAIR_COMMISSION, "ftpair-commission"), (GUEST_FTPAIRD, "the guest ftpaird (make guest-build)"),
                       (FTPAIRCTL, "ftpairctl")):
        if not os.path.exists(path):
            print("FAIL: %s not built (%s)" % (what, path))
            sys.exit(1)


A_IP, B_IP = V.NET + ".1", V.NET + ".2"
IP = {"a": A_IP, "b": B_IP}


def deploy(s, config_extra="", cmdline_extra=""):
    """Networks, the initramfs with ftpaird, the spec (libvirt fencing and lifecycle events from the
    guests over qemu+tcp) and `ftpair-virt deploy`. Returns (spec path, rc, stderr)."""
    s.cleanup_domains()  # a run killed midway leaves its persistent domains defined
    nets_down()  # a run killed midway leaves them
    nets_up(s)
    kernel, initrd = V.guest_boot_files(s, "guest-ftpaird-virtio.yaml", GUEST_FTPAIRD)
    config = ("{failover.fence: libvirt, failover.libvirt_uri: 'qemu+tcp://%s.254/system', failover.libvirt_events: true%s}"
              % (V.NET, (", " + config_extra) if config_extra else ""))
    spec = s.write_spec(PAIR, kernel=(kernel, initrd), config=config, memory_mib=768, guest_daemon=True,
                        nics=["{type: bridge, source: %s, port: inside}" % LAN,
                              "{type: bridge, source: %s, port: outside}" % WAN], cmdline_extra=cmdline_extra)
    rc, rep, err = s.virt("deploy", "--spec", spec)
    return spec, rc, err


def in_sync(active_ip, standby_ip, flows=0):
    """Both statuses when active_ip is active and standby_ip a standby in sync with >= flows."""
    a, b = status(active_ip), status(standby_ip)
    if a and b and a.get("role") == "active" and b.get("state") == "STANDBY_READY" and \
            b.get("sync", {}).get("in_sync") and int(b.get("flows", 0)) >= flows:
        return a, b
    return None


def diag(s):
    return "a: %s\nb: %s\n--- a serial ---\n%s\n--- b serial ---\n%s" % (
        status(A_IP), status(B_IP), serial_tail(s, PAIR + "-a.serial"), serial_tail(s, PAIR + "-b.serial"))


class Traffic:
    """The echo server in the server namespace and CONNS byte-checked client connections from the
    client namespace, through the active guest. A TCG guest forwards slowly and a failover takes
    seconds: a low rate and a long op timeout (a connection that stalls longer fails)."""

    def __init__(self, s, conns, rate=2048, op_timeout=60):
        self.conns = conns
        self.server = subprocess.Popen(["ip", "netns", "exec", SERVER_NS, "/usr/bin/python3", TRAFFIC, "echo-server",
                                        "--port", str(ECHO_PORT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True)
        s.on_exit.insert(0, ["kill", str(self.server.pid)])
        self.listening = self.server.stdout.readline()
        self.err_path = os.path.join(s.dir, "client.stderr")
        self.client = subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, "/usr/bin/python3", TRAFFIC, "echo-client",
                                        "--host", SERVER_IP, "--port", str(ECHO_PORT), "--conns", str(conns),
                                        "--seconds", "100000", "--rate-bytes-per-s", str(rate), "--op-timeout",
                                        str(op_timeout), "--connect-timeout", "30", "--json"],
                                       stdout=subprocess.PIPE, stderr=open(self.err_path, "w"), text=True)
        s.on_exit.insert(0, ["kill", "-9", str(self.client.pid)])
        self._lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.client.stdout:
            self._lines.append(line)

    def stderr(self, n=1500):
        with open(self.err_path) as f:
            return f.read()[-n:]

    def streaming(self):
        with open(self.err_path) as f:
            return "STREAMING" in f.read()

    def interim(self, timeout=10):
        """The client's summary now (SIGUSR1), or None."""
        had = len(self._lines)
        self.client.send_signal(10)  # SIGUSR1
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self._lines) == had:
            time.sleep(0.05)
        return _last_json(self._lines[had:])

    def stop_now(self):
        """Ends the client at once (two SIGTERMs: no drain) and returns its summary."""
        self.client.send_signal(15)
        time.sleep(0.5)
        self.client.send_signal(15)
        try:
            self.client.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.client.kill()
            self.client.wait()
        self._reader.join(timeout=5)
        return _last_json(self._lines)


def _last_json(lines):
    doc = None
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            pass
    return doc


def broken(summary):
    """Connections that failed (reset, corrupted, timed out, never connected)."""
    if not summary:
        return None
    return sum(summary.get(k, 0) for k in ("reset", "corrupt", "timeout", "connect_failed"))
