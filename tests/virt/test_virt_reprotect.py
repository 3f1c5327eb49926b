#!/usr/bin/python3
"""Re-protection with the real daemon inside the guests: two TCG guests boot a Debian kernel with an
initramfs that carries ftpaird (built without -march=native) and the static ftpair-commission as
/init. Each commissions itself from its SMBIOS strings, brings its virtio management NIC up and
runs ftpaird: the inside port is DPDK af_packet on the guest's second NIC, which sits on a host
bridge with a client network namespace; the outside port is net_null. The test:

  1. sends 200 UDP flows from real kernel sockets in the client namespace through the active guest
     (it answers ARP for its inside VIP), and waits until a is active with the 200 flows and b a
     standby in sync with them (Control.Status);
  2. fills the warm pool: a spare boots, commissions itself as a spare, starts its daemon (which
     builds its dataplane and waits for an identity) and waits to be claimed; only then is it
     paused;
  3. fences b (destroy) and replaces it from the pool: resume, assume b's identity (token-checked),
     the spare's daemon, started before the claim with its dataplane built, takes b's config, the
     active's stream reaches it, full sync; `ftpair-virt pool replace` returns once the replacement
     is a standby in sync; the test checks its flows, node id and that the same process answers;
  4. a bad claim (wrong token, bad line) to the refilled spare is refused and it stays claimable;
  5. the baseline: b fenced again and replaced by a freshly defined domain, also to in sync;
  6. the active is suspended: b's libvirt fencer finds a's domain by the pair's metadata
     (failover.libvirt_peer, as every member of a pair with a pool has), destroys it, and b
     takes over.

Figures (reprotect_s for pool and fresh, pool refill) are printed as RESULT lines and, with
FTPAIR_BENCH_OUT set, appended there as JSON lines. Slow: four TCG boots."""

import glob
import json
import os
import re
import subprocess
import sys
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
for path, what in ((V.FTPAIR_COMMISSION, "ftpair-commission"), (GUEST_FTPAIRD, "the guest ftpaird (make guest-build)"),
                   (FTPAIRCTL, "ftpairctl")):
    if not os.path.exists(path):
        print("FAIL: %s not built (%s)" % (what, path))
        sys.exit(1)

FLOWS = 200
PORT = 50051


LAN, CLIENT_NS = "ftvr-lan", "ftvr-client"
INSIDE_VIP, CLIENT_IP, REMOTE = "198.19.250.1", "198.19.250.10", "198.19.251.10"


def sh(*args):
    return subprocess.run(list(args), capture_output=True, text=True)


def lan_up(s):
    """The guests' inside network: a host bridge, and a client namespace on it by a veth."""
    for argv in (["ip", "link", "add", LAN, "type", "bridge"], ["ip", "link", "set", LAN, "up"],
                 ["ip", "netns", "add", CLIENT_NS],
                 ["ip", "link", "add", "ftvr-c0", "type", "veth", "peer", "name", "ftvr-c1"],
                 ["ip", "link", "set", "ftvr-c0", "master", LAN, "up"],
                 ["ip", "link", "set", "ftvr-c1", "netns", CLIENT_NS],
                 ["ip", "-n", CLIENT_NS, "addr", "add", CLIENT_IP + "/24", "dev", "ftvr-c1"],
                 ["ip", "-n", CLIENT_NS, "link", "set", "ftvr-c1", "up"],
                 ["ip", "-n", CLIENT_NS, "route", "add", "default", "via", INSIDE_VIP]):
        p = sh(*argv)
        if p.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(argv), p.stderr.strip()))
    s.on_exit += [["ip", "netns", "del", CLIENT_NS], ["ip", "link", "del", LAN]]


def lan_down():
    sh("ip", "netns", "del", CLIENT_NS)
    sh("ip", "link", "del", LAN)


SEND = """
import socket, sys
n = int(sys.argv[1])
socks = []
for i in range(n):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("%s", 21000 + i))
    u.sendto(b"ftpair-flow-%%04d" %% i, ("%s", 53))
    socks.append(u)
""" % (CLIENT_IP, REMOTE)


def send_flows(n):
    """n UDP flows from n kernel sockets in the client namespace, through the active's inside VIP."""
    return sh("ip", "netns", "exec", CLIENT_NS, "/usr/bin/python3", "-c", SEND, str(n))


def status(ip):
    return V.ctl_status(FTPAIRCTL, "%s:%d" % (ip, PORT))


def ctl_config(ip):
    """The configuration the daemon at ip runs with (ftpairctl config), or the error."""
    p = subprocess.run([FTPAIRCTL, "--addr", "%s:%d" % (ip, PORT), "--timeout", "2", "config"],
                       capture_output=True, text=True, timeout=15)
    return p.stdout if p.returncode == 0 else "ftpairctl config: rc %d %s" % (p.returncode, p.stderr.strip())


def wait_for(what, pred, timeout):
    t0 = time.monotonic()
    end = t0 + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last, time.monotonic() - t0
        time.sleep(0.5)
    V.log("timed out after %.0f s waiting for %s" % (timeout, what))
    return None, time.monotonic() - t0


def serial_tail(s, name, n=25):
    path = os.path.join(s.dir, name)
    if not os.path.exists(path):
        return "(no serial log %s)" % path
    return "".join(open(path, errors="replace").readlines()[-n:])


results = V.Results()
emit = results.emit


# The guests fence by libvirt over qemu+tcp to the host's libvirtd (fenced to the management
# subnet, virtutil): with a pool, by the pair and node in the domains' metadata.
with V.VirtSession(prefix="ftvr", libvirt_tcp=True) as s:
    s.cleanup_domains()  # a run killed midway leaves its persistent domains defined
    lan_down()  # a run killed midway leaves them
    lan_up(s)
    kernel, initrd = V.guest_boot_files(s, "guest-ftpaird.yaml", GUEST_FTPAIRD)
    pair = "ftvr"
    config = "{failover.fence: libvirt, failover.libvirt_uri: 'qemu+tcp://%s.254/system'}" % V.NET
    spec = s.write_spec(pair, kernel=(kernel, initrd), pool=1, config=config, memory_mib=768, guest_daemon=True,
                        nics=["{type: bridge, source: %s}" % LAN])
    a_ip, b_ip = V.NET + ".1", V.NET + ".2"

    # ---- 1. the pair comes up on its own ----
    rc, rep, err = s.virt("deploy", "--spec", spec)
    s.check("deploy of two guests that run ftpaird", rc == 0, err)

    def pair_in_sync():
        a, b = status(a_ip), status(b_ip)
        if a and a.get("role") == "active" and int(a.get("flows", 0)) < FLOWS:
            send_flows(FLOWS)  # the active's ARP for the VIP may not have been up for the first try
        if a and b and a.get("role") == "active" and b.get("state") == "STANDBY_READY" and \
                b.get("sync", {}).get("in_sync") and int(a.get("flows", 0)) == FLOWS and int(b.get("flows", 0)) == FLOWS:
            return a, b
        return None

    got, took = wait_for("a active with %d flows, b in sync" % FLOWS, pair_in_sync, 300)
    s.check("guest a is active with the %d replayed flows, guest b a standby in sync with them" % FLOWS, got is not None,
            "after %.1f s" % took if got else "a: %s\nb: %s\n--- a serial ---\n%s\n--- b serial ---\n%s" % (
                status(a_ip), status(b_ip), serial_tail(s, pair + "-a.serial"), serial_tail(s, pair + "-b.serial")))
    if got is None:
        sys.exit(1)
    a0 = got[0]
    s.check("roles and ids come from commissioning", a0.get("node_id") == "a" and got[1].get("node_id") == "b",
            "%s/%s" % (a0.get("node_id"), got[1].get("node_id")))

    # ---- 2. the warm pool: a spare boots to its claim listener, then is paused ----
    rc, rep, err = s.virt("pool", "fill", "--spec", spec, timeout=400)
    added = rep["added"] if rc == 0 and rep else []
    s.check("pool fill boots a spare and pauses it once it waits to be claimed",
            rc == 0 and len(added) == 1 and added[0].get("ready_s", 0) > 0, err or json.dumps(rep))
    spare = added[0]["domain"] if added else pair + "-spare-0"
    s.check("the spare is paused", s.domstate(spare) == "paused", s.domstate(spare))
    s.check("the spare commissioned itself as a spare", "spare waiting for the host on %s.10/24" % V.NET in
            serial_tail(s, pair + "-b.serial.spare-0", 200), serial_tail(s, pair + "-b.serial.spare-0"))

    # ---- 3. b fails; the pool replaces it up to "standby in sync" ----
    rc, rep, err = s.virt("fence", "--spec", spec, "--node", "b")
    s.check("fence b (destroy)", rc == 0 and rep["ok"], err)
    fence_ms = rep["seconds"] * 1000 if rc == 0 else -1
    a_mid = status(a_ip)
    s.check("a stays active while b is gone", a_mid is not None and a_mid.get("role") == "active", str(a_mid))
    rc, rep, err = s.virt("pool", "replace", "--spec", spec, "--failed", "b", timeout=600)
    ok = rc == 0 and rep and rep.get("reached") == "standby in sync"
    s.check("pool replace reaches 'standby in sync'", ok,
            (json.dumps(rep) if rep else "") + " " + err + "\n--- spare serial ---\n" + serial_tail(s, pair + "-b.serial.spare-0"))
    if ok:
        # The host's wait asked the active only: the replacement said READY in the acknowledgement
        # of its full sync, on a stream that began after b's domain was destroyed.
        said = rep.get("sync", {})
        s.check("the wait ended on the standby's acknowledgement, read from the active (the replacement was not asked)",
                said.get("said_by", "").startswith("the standby's acknowledgement") and said.get("standby_node") == "b" and
                said.get("state") == "STANDBY_READY" and 0 <= said.get("stream_age_s", -1) < rep.get("in_sync_s", 0),
                json.dumps(said))
        b1, a1 = status(b_ip), status(a_ip)
        s.check("the replacement answers at b's address as node b, standby in sync",
                b1 and b1.get("node_id") == "b" and b1.get("state") == "STANDBY_READY" and b1["sync"].get("in_sync"), str(b1))
        s.check("the replacement holds every flow of the active (%d)" % FLOWS,
                b1 and int(b1.get("flows", 0)) == FLOWS and a1 and int(a1.get("flows", 0)) == FLOWS,
                "b %s, a %s" % (b1 and b1.get("flows"), a1 and a1.get("flows")))
        s.check("the active full-synced the replacement",
                a1 and int(a1["sync"].get("full_syncs", 0)) > int(a0["sync"].get("full_syncs", 0)),
                "full syncs %s -> %s" % (a0["sync"].get("full_syncs"), a1 and a1["sync"].get("full_syncs")))
        s.check("the active kept its role and generation throughout",
                a1 and a1.get("role") == "active" and a1.get("generation") == a0.get("generation"), str(a1))
        s.check("the pool was refilled", isinstance(rep.get("refill"), dict) and len(rep["refill"].get("added", [])) == 1,
                json.dumps(rep.get("refill")))
        # The spare's daemon ran before the claim (its dataplane built) and took b's identity: the
        # process that answers as b is the one the spare started (virt/spare_link.h).
        spare_serial = serial_tail(s, pair + "-b.serial.spare-0", 100000)  # the whole log: the line comes early
        pre = re.search(r"daemon pre-started \(pid (\d+)\)", spare_serial)
        s.check("the spare's daemon was started before the claim and took node b's config (the same process answers)",
                pre is not None and "the pre-started daemon took the node's config" in spare_serial and b1 and
                int(b1.get("pid", 0)) == int(pre.group(1)),
                "pid %s; --- spare serial ---\n%s" % (b1 and b1.get("pid"), spare_serial[-3000:]))
        cfg = ctl_config(b_ip)
        s.check("the claimed spare fences node a by the pair's metadata (failover.libvirt_peer: %s/a)" % pair,
                "libvirt_peer: %s/a" % pair in cfg and "libvirt_domain: ftvr" not in cfg, cfg[-800:])
        V.log("pool replace: running %.2f s, claimed %.2f s, in sync %.2f s; refill %.1f s" % (
            rep["replace_s"], rep["claimed_s"], rep["in_sync_s"], rep["refill_s"]))
        emit("reprotect_s", rep["in_sync_s"], "s", {"source": "pool", "reached": "standby in sync", "flows": FLOWS,
                                                     "domain": "tcg-kernel-initramfs-768MiB", "host": "2 shared vCPUs"})
        emit("pool_refill_s", rep["refill_s"], "s", {"reached": "spare booted, waiting to be claimed, paused"})
        emit("fence_ms", fence_ms, "ms", {"action": "destroy", "domain": "tcg-kernel-initramfs-768MiB"})

    # ---- 4. bad claims are refused; the spare stays claimable ----
    rc, st, err = s.virt("pool", "status", "--spec", spec)
    new_spare = [d["domain"] for d in (st or {}).get("domains", []) if d.get("state") == "spare"]
    if new_spare:
        name = new_spare[0]
        s.virsh("resume", name)
        addr = V.NET + ".10"  # the pool address the first spare left free again

        def ask(line):
            import socket
            with socket.create_connection((addr, 50059), timeout=5) as c:
                c.sendall(line.encode() + b"\n")
                return c.makefile().readline().strip()
        for line, want in (("assume token=wrong node=b address=%s.2/24 peer=%s.1:50051" % (V.NET, V.NET),
                            "refused: assume: wrong token"),
                           ("hello", "refused: assume: unknown request 'hello'")):
            try:
                got = ask(line)
            except OSError as e:
                got = "error: %s" % e
            s.check("a bad claim is refused: %s" % want, got == want, got)
        try:
            pong = ask("ping")
        except OSError as e:
            pong = "error: %s" % e
        s.check("the spare is still claimable after bad claims", pong == "ready", pong)
        s.virsh("suspend", name)
    else:
        s.check("a refilled spare exists", False, json.dumps(st))

    # ---- 5. the baseline: a freshly defined domain for b, also to "standby in sync" ----
    rc, rep, err = s.virt("fence", "--spec", spec, "--node", "b")
    s.check("fence the replacement", rc == 0, err)
    rc, rep, err = s.virt("pool", "replace", "--spec", spec, "--failed", "b", "--fresh", timeout=600)
    ok = rc == 0 and rep and rep.get("reached") == "standby in sync"
    s.check("fresh replace reaches 'standby in sync'", ok, (json.dumps(rep) if rep else "") + " " + err)
    if ok:
        b2 = status(b_ip)
        s.check("the fresh b holds every flow", b2 and int(b2.get("flows", 0)) == FLOWS, str(b2 and b2.get("flows")))
        emit("reprotect_s", rep["in_sync_s"], "s", {"source": "fresh", "reached": "standby in sync", "flows": FLOWS,
                                                     "domain": "tcg-kernel-initramfs-768MiB", "host": "2 shared vCPUs"})

        # ---- 6. the active stalls: b fences it, found by the metadata, and takes over ----
        # A paused domain still holds its resources and could resume: b's fencer must find a's
        # domain as node a of the pair and destroy it before b promotes.
        s.virsh("suspend", pair + "-a")

        def b_took_over():
            b3 = status(b_ip)
            return b3 if b3 and b3.get("role") == "active" else None
        got, took = wait_for("b active after a's suspend", b_took_over, 60)
        s.check("b takes over from the suspended active", got is not None,
                "after %.1f s; b: %s\n--- b serial ---\n%s" % (took, status(b_ip), serial_tail(s, pair + "-b.serial")))
        s.check("b's fencer destroyed a's domain, found by its metadata", s.domstate(pair + "-a") == "shut off",
                s.domstate(pair + "-a"))
    s.virt("teardown", "--spec", spec, "--acpi-timeout-ms", "0")

results.write()
sys.exit(s.exit_code())
