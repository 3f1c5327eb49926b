#!/usr/bin/python3
"""Traffic through the VM pair across a switchover and a VM's death. Two TCG guests boot a Debian
kernel with an initramfs that carries ftpaird; both dataplane ports of each guest are its own
virtio NICs, bound to uio_pci_generic by the guest's init and driven by DPDK's net_virtio PMD
(hugepages in the guest). The host bridges those NICs join hold a client namespace (LAN) and a
server namespace (WAN), so real kernel TCP connections cross the active guest's NAT. The daemons
in the guests reach the host's libvirtd over TCP (qemu+tcp, lab only) for the peer's lifecycle
events and to fence it.

  1. the pair comes up: a active, b a standby in sync; each guest's status names the net_virtio
     PMD on the PCI addresses the host gave (0000:00:04.0 inside, 0000:00:05.0 outside);
  2. 8 byte-checked TCP connections from the client to the server, through the active guest; the
     standby holds their flows;
  3. `ftpairctl switchover` from a to b: b active, a a standby in sync again;
  4. `virsh destroy` of b's domain (the active now): a learns it (lifecycle events and beats),
     fences b with libvirt and takes over;
  5. b's domain started again: it rejoins as a standby in sync;
  6. `ftpair-virt shutdown` under traffic: both daemons asked their roles, a final checkpoint on
     the active acknowledged by the standby, the standby's guest stopped (ACPI: its init stops
     ftpaird cleanly), then the active's, then the network;
  7. every connection survived all of it byte for byte, still echoed after the standby had
     stopped, and ended only when the active went down; there were never two actives.

Figures (the time from the cause to the survivor serving as active) are printed as RESULT lines
and, with FTPAIR_BENCH_OUT set, appended there as JSON lines."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import virtutil as V

V.require()
kernels = sorted(glob.glob("/boot/vmlinuz-*"))
if not kernels:
    print("SKIP: no /boot/vmlinuz-* (tools/install-deps.sh: linux-image-cloud-amd64)")
    sys.exit(V.SKIP)
GUEST_FTPAIRD = os.environ.get("FTPAIRD_GUEST", os.path.join(V.REPO, "build-guest", "control", "ftpaird"))
FTPAIRCTL = os.environ.get("FTPAIRCTL", os.path.join(os.path.dirname(os.path.dirname(V.FTPAIR_VIRT)), "tools",
                                                     "ftpairctl", "ftpairctl"))
TRAFFIC = os.path.join(V.REPO, "tools", "lab", "traffic.py")
for path, what in ((V.FTPAIR_COMMISSION, "ftpair-commission"), (GUEST_FTPAIRD, "the guest ftpaird (make guest-build)"),
                   (FTPAIRCTL, "ftpairctl")):
    if not os.path.exists(path):
        print("FAIL: %s not built (%s)" % (what, path))
        sys.exit(1)

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
    for ns in (CLIENT_NS, SERVER_NS):
        sh("ip", "netns", "del", ns)
    for br in (LAN, WAN):
        sh("ip", "link", "del", br)


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
    try:
        p = subprocess.run([FTPAIRCTL, "--addr", "%s:%d" % (ip, PORT), "--timeout", str(timeout), "--json", "status"],
                           capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


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
    """Both guests' roles every 0.2 s: a sample where both say active is two owners."""

    def __init__(self, ips):
        super().__init__(daemon=True)
        self.ips, self.stop, self.both, self.samples = ips, False, [], 0
        self.active_since = {}

    def run(self):
        while not self.stop:
            roles = {}
            for ip in self.ips:
                st = status(ip, timeout=1)
                roles[ip] = st.get("role") if st else None
                if roles[ip] == "active" and ip not in self.active_since:
                    self.active_since[ip] = time.monotonic()
                elif roles[ip] != "active":
                    self.active_since.pop(ip, None)
            self.samples += 1
            if all(r == "active" for r in roles.values()):
                self.both.append(time.monotonic())
            time.sleep(0.2)


def serial_tail(s, name, n=25):
    path = os.path.join(s.dir, name)
    if not os.path.exists(path):
        return "(no serial log %s)" % path
    return "".join(open(path, errors="replace").readlines()[-n:])


results = []


def emit(name, value, unit, params):
    line = {"name": name, "value": round(value, 4), "unit": unit, "params": params}
    results.append(line)
    print("RESULT " + json.dumps(line))


with V.VirtSession(prefix=PAIR, libvirt_tcp=True) as s:
    s.cleanup_domains()  # a run killed midway leaves its persistent domains defined
    kernel = os.path.join(s.dir, "vmlinuz")
    shutil.copy(kernels[-1], kernel)
    kver = re.sub(r"^vmlinuz-", "", os.path.basename(kernels[-1]))
    nets_down()  # a run killed midway leaves them
    nets_up(s)
    initrd = os.path.join(s.dir, "initrd.cpio")
    subprocess.run(["/usr/bin/python3", os.path.join(V.HERE, "mkinitramfs.py"), V.FTPAIR_COMMISSION, initrd,
                    "--daemon", GUEST_FTPAIRD, "--base-config", os.path.join(V.HERE, "guest-ftpaird-virtio.yaml"),
                    "--kernel-version", kver], check=True)
    V.log("initramfs with ftpaird: %.1f MiB" % (os.path.getsize(initrd) / 2**20))
    host = V.NET + ".254"
    config = "{failover.fence: libvirt, failover.libvirt_uri: 'qemu+tcp://%s/system', failover.libvirt_events: true}" % host
    spec = s.write_spec(PAIR, kernel=(kernel, initrd), config=config, memory_mib=768, guest_daemon=True,
                        nics=["{type: bridge, source: %s, port: inside}" % LAN,
                              "{type: bridge, source: %s, port: outside}" % WAN])
    a_ip, b_ip = V.NET + ".1", V.NET + ".2"
    serials = {a_ip: PAIR + "-a.serial", b_ip: PAIR + "-b.serial"}

    def diag():
        return "a: %s\nb: %s\n--- a serial ---\n%s\n--- b serial ---\n%s" % (
            status(a_ip), status(b_ip), serial_tail(s, serials[a_ip]), serial_tail(s, serials[b_ip]))

    # ---- 1. the pair comes up, its ports on net_virtio ----
    rc, rep, err = s.virt("deploy", "--spec", spec)
    s.check("deploy of two guests that run ftpaird on virtio NICs", rc == 0, err)

    def in_sync(active_ip, standby_ip, flows=0):
        a, b = status(active_ip), status(standby_ip)
        if a and b and a.get("role") == "active" and b.get("state") == "STANDBY_READY" and \
                b.get("sync", {}).get("in_sync") and int(b.get("flows", 0)) >= flows:
            return a, b
        return None

    got, took = wait_for("a active, b a standby in sync", lambda: in_sync(a_ip, b_ip), 300)
    if not s.check("guest a is active, guest b a standby in sync", got is not None,
                   "after %.1f s" % took if got else diag()):
        sys.exit(1)
    for node, st in zip("ab", got):
        ports = {p.get("name"): p for p in st.get("ports", [])}
        want = {"inside": "0000:00:04.0", "outside": "0000:00:05.0"}
        s.check("guest %s drives both ports with DPDK's net_virtio on the PCI addresses the host gave" % node,
                all(ports.get(k, {}).get("driver") == "net_virtio" and ports.get(k, {}).get("device") == v
                    for k, v in want.items()), json.dumps(st.get("ports")))
    text = subprocess.run([FTPAIRCTL, "--addr", "%s:%d" % (a_ip, PORT), "status"], capture_output=True,
                          text=True).stdout
    s.check("ftpairctl status shows the port driver and the PCI address",
            "port inside" in text and "0000:00:04.0, driver net_virtio" in text, text)

    # ---- 2. byte-checked TCP connections through the active guest ----
    server = subprocess.Popen(["ip", "netns", "exec", SERVER_NS, "/usr/bin/python3", TRAFFIC, "echo-server",
                               "--port", str(ECHO_PORT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    s.on_exit.insert(0, ["kill", str(server.pid)])
    line = server.stdout.readline()
    s.check("echo server listens in the server namespace", "LISTENING" in line, line)
    client_err = os.path.join(s.dir, "client.stderr")
    # A TCG guest forwards slowly and a failover takes seconds: a low rate and a long op timeout
    # (a connection that stalls longer than that fails the test).
    client = subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, "/usr/bin/python3", TRAFFIC, "echo-client",
                               "--host", SERVER_IP, "--port", str(ECHO_PORT), "--conns", str(CONNS),
                               "--seconds", "600", "--rate-bytes-per-s", "2048", "--op-timeout", "60",
                               "--connect-timeout", "30", "--json"],
                              stdout=subprocess.PIPE, stderr=open(client_err, "w"), text=True)
    s.on_exit.insert(0, ["kill", "-9", str(client.pid)])

    def streaming():
        with open(client_err) as f:
            return "STREAMING" in f.read()
    ok, took = wait_for("%d connections streaming" % CONNS, streaming, 90)
    s.check("%d TCP connections stream through guest a" % CONNS, ok,
            open(client_err).read()[-2000:] + "\n" + diag() if not ok else "after %.1f s" % took)
    got, _ = wait_for("b holds the connections' flows", lambda: in_sync(a_ip, b_ip, CONNS), 60)
    s.check("standby b holds the %d flows" % CONNS, got is not None, diag() if not got else
            "a %s flows, b %s" % (got[0].get("flows"), got[1].get("flows")))

    watch = Watch([a_ip, b_ip])
    watch.start()

    # ---- 3. graceful switchover a -> b ----
    t0 = time.monotonic()
    p = subprocess.run([FTPAIRCTL, "--addr", "%s:%d" % (a_ip, PORT), "--timeout", "30", "switchover"],
                       capture_output=True, text=True, timeout=60)
    s.check("ftpairctl switchover from a", p.returncode == 0, p.stdout + p.stderr)
    got, took = wait_for("b active, a a standby in sync", lambda: in_sync(b_ip, a_ip, CONNS), 120)
    s.check("switchover: b is active, a a standby in sync with the flows", got is not None,
            "after %.1f s" % took if got else diag())
    if got:
        served = watch.active_since.get(b_ip)
        emit("vm_failover_ms", ((served or time.monotonic()) - t0) * 1000, "ms",
             {"cause": "switchover", "conns": CONNS, "domain": "tcg-kernel-initramfs-768MiB", "seen_by": "status poll 0.2 s"})
    time.sleep(3)  # traffic through b for a while

    # ---- 4. the active's domain destroyed ----
    t0 = time.monotonic()
    p = s.virsh("destroy", PAIR + "-b")
    s.check("virsh destroy of the active's domain (b)", p.returncode == 0, p.stderr)
    got, took = wait_for("a active", lambda: (status(a_ip) or {}).get("role") == "active", 120, step=0.2)
    s.check("destroy: a takes over", got is not None, "after %.1f s" % took if got else diag())
    if got:
        emit("vm_failover_ms", took * 1000, "ms", {"cause": "destroy", "conns": CONNS,
                                                   "domain": "tcg-kernel-initramfs-768MiB", "seen_by": "status poll 0.2 s"})
    a_log = serial_tail(s, serials[a_ip], 400).splitlines()
    fenced = [l for l in a_log if "[fence]" in l and PAIR + "-b" in l]
    s.check("a fenced b's domain with libvirt", any(" ok" in l for l in fenced),
            "\n".join(fenced or [l for l in a_log if "fence" in l or "ACTIVE" in l or "libvirt" in l])[-1500:])
    promoted = [l for l in a_log if "is ACTIVE (generation" in l]
    V.log("a: %s" % (promoted[-1] if promoted else "(no promotion line)"))
    time.sleep(5)  # traffic through a again

    # ---- 5. b again: a standby in sync with the connections' flows ----
    watch.stop = True
    watch.join()
    p = s.virsh("start", PAIR + "-b")
    s.check("b's domain started again", p.returncode == 0, p.stderr)
    got, took = wait_for("a active, b a standby in sync again", lambda: in_sync(a_ip, b_ip, CONNS), 240)
    s.check("b rejoined as a standby in sync with the flows", got is not None,
            "after %.1f s" % took if got else diag())

    # ---- 6. the ordered shutdown under traffic: a final checkpoint, the standby, then the active ----
    off_at = {}

    def watch_off():
        while len(off_at) < 2:
            for node in "ab":
                if node not in off_at and s.domstate(PAIR + "-" + node) == "shut off":
                    off_at[node] = time.time()
            time.sleep(0.1)
    offw = threading.Thread(target=watch_off, daemon=True)
    offw.start()
    rc, rep, err = s.virt("shutdown", "--spec", spec, "--acpi-timeout-ms", "60000", "--checkpoint-timeout-ms", "30000",
                          timeout=300)
    offw.join(timeout=10)
    steps = rep["steps"] if rep else []
    s.check("ftpair-virt shutdown of the pair under traffic", rc == 0, err + "\n" + json.dumps(steps))
    order = [(x["step"], x.get("domain", x.get("network"))) for x in steps]
    s.check("shutdown order: drain both, final checkpoint, standby b, active a, the network",
            order == [("drain", PAIR + "-b"), ("drain", PAIR + "-a"), ("final_checkpoint", None), ("vm", PAIR + "-b"),
                      ("vm", PAIR + "-a"), ("network", PAIR + "-mgmt")], json.dumps(order))
    ck = [x for x in steps if x["step"] == "final_checkpoint"]
    s.check("the final checkpoint was acknowledged by the standby and a snapshot written",
            ck and ck[0].get("result") == "acknowledged by the standby, snapshot written", json.dumps(ck))
    vms = [x for x in steps if x["step"] == "vm"]
    s.check("both guests stopped on the ACPI power button (ftpaird's clean shutdown), none destroyed",
            len(vms) == 2 and all(x.get("result") == "acpi shutdown" for x in vms), json.dumps(vms))
    a_serial = serial_tail(s, serials[a_ip], 60)
    s.check("the active's ftpaird stopped cleanly and wrote its snapshot",
            "power button: stopping ftpaird" in a_serial and "ftpaird exited: status 0" in a_serial, a_serial[-1500:])

    # ---- 7. every connection survived, byte for byte, until the last guest stopped ----
    client.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    client.send_signal(signal.SIGTERM)  # the second one: report now (the path is gone, nothing drains)
    try:
        out, _ = client.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        client.kill()
        out, _ = client.communicate()
    summary = None
    for line in out.splitlines():
        try:
            summary = json.loads(line)
        except ValueError:
            pass
    s.check("no connection was reset or corrupted across the switchover, the destroy and the shutdown",
            summary is not None and summary.get("reset") == 0 and summary.get("corrupt") == 0 and
            summary.get("timeout") == 0 and summary.get("connect_failed") == 0,
            json.dumps(summary) + "\n" + open(client_err).read()[-1500:])
    s.check("never two actives", not watch.both and watch.samples > 10,
            "%d of %d samples with two actives" % (len(watch.both), watch.samples))
    last = (summary or {}).get("last_echo_unix", [])
    t_b, t_a = off_at.get("b"), off_at.get("a")
    s.check("the standby stopped before the active", t_b is not None and t_a is not None and t_b < t_a,
            "b off at %s, a off at %s" % (t_b, t_a))
    vm_a = [x for x in vms if x.get("domain") == PAIR + "-a"]
    if t_b and t_a and len(last) == CONNS and vm_a:
        # The active's ACPI stop began when its step began: off_at minus the step's length.
        t_a_asked = t_a - vm_a[0]["seconds"]
        s.check("every connection still echoed after the standby had stopped (its stop lost nothing)",
                all(x > t_b for x in last), "last echoes %.2f..%.2f s after b was off" % (min(last) - t_b, max(last) - t_b))
        s.check("every connection echoed until the active was asked to stop (within 0.5 s)",
                all(x >= t_a_asked - 0.5 for x in last),
                "last echoes %.2f..%.2f s after the active's stop began" % (min(last) - t_a_asked, max(last) - t_a_asked))
        V.log("connections ended with the pair: last echoes %.2f..%.2f s before the active was off"
              % (t_a - max(last), t_a - min(last)))
        s.check("connections ended only when the pair went down: none echoed after the active was off",
                all(x <= t_a for x in last), "latest echo %.2f s after" % (max(last) - t_a))
    if summary:
        for cause in ("switchover", "destroy"):
            emit("vm_connections_survived_ratio", (CONNS - summary.get("reset", 0) - summary.get("corrupt", 0) -
                                                   summary.get("timeout", 0)) / float(CONNS), "ratio",
                 {"cause": cause, "conns": CONNS, "max_gap_ms": summary.get("max_gap_ms")})
    s.virt("teardown", "--spec", spec, "--acpi-timeout-ms", "0")

if os.environ.get("FTPAIR_BENCH_OUT") and results:
    with open(os.environ["FTPAIR_BENCH_OUT"], "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
sys.exit(s.exit_code())
