#!/usr/bin/python3
"""ftpair-virt against a real libvirtd: deploy (OEM strings), boot verification through the qemu
hook (ftpair deploy and a plain `virsh start`), lifecycle events, fencing, warm pool replace,
ordered shutdown, teardown with reuse, and an unreachable libvirt URI."""

import json
import os
import socket
import subprocess
import sys
import time

import virtutil as V

V.require()

with V.VirtSession() as s:
    img = s.make_image("node.img")
    # A data-plane NIC on a host bridge (a local bridge with no uplink; removed at the end).
    s.run("ip", "link", "del", "ftvbr0")  # a leftover from an interrupted run
    s.run("ip", "link", "add", "ftvbr0", "type", "bridge", check=True)
    s.on_exit.append(["ip", "link", "del", "ftvbr0"])
    spec = s.write_spec("ftvp1", image=img, pool=1, reuse="same-image", nics=["{type: bridge, source: ftvbr0}"])

    # ---- bad specs are refused before anything is defined, with the field named ----
    bad = os.path.join(s.dir, "bad-role.yaml")
    with open(bad, "w") as f:
        f.write(open(spec).read().replace("role: standby", "role: active"))
    rc, _, err = s.virt("deploy", "--spec", bad)
    s.check("spec with two actives refused, field named", rc == 2 and "nodes.b.role: both nodes are active" in err, err)
    with open(bad, "w") as f:
        f.write(open(spec).read().replace("    memory_mib: 32\n", "", 1))
    rc, _, err = s.virt("deploy", "--spec", bad)
    s.check("spec missing memory refused, field named", rc == 2 and "nodes.a.memory_mib: missing" in err, err)
    s.check("nothing defined by a refused spec", s.domstate("ftvp1-a") == "absent")

    # ---- deploy ----
    rc, rep, err = s.virt("deploy", "--spec", spec)
    s.check("deploy exits 0", rc == 0, err)
    s.check("deploy defined both nodes",
            rep is not None and [n["action"] for n in rep["nodes"]] == ["defined", "defined"], json.dumps(rep))
    for node, role, peer in (("a", "active", "" + V.NET + ".2"), ("b", "standby", "" + V.NET + ".1")):
        name = "ftvp1-" + node
        s.check("%s running" % name, s.domstate(name) == "running", s.domstate(name))
        xml = s.virsh("dumpxml", name).stdout
        for want in ("<entry>ftpair:node.role=%s</entry>" % role, "<entry>ftpair:node.id=%s</entry>" % node,
                     "<entry>ftpair:peer.grpc=%s:50051</entry>" % peer, "<smbios mode='sysinfo'/>",
                     "urn:ftpair:virt:1", "<source bridge='ftvbr0'/>"):
            s.check("%s XML carries %s" % (name, want), want in xml)
        # What the guest will read: the OEM strings in qemu's command line (type 11 table).
        try:
            cmd = open("/proc/%d/cmdline" % V.read_pid("/run/libvirt/qemu/%s.pid" % name)).read().replace("\0", " ")
        except OSError:
            cmd = ""
        s.check("%s qemu gets the type 11 strings" % name, "type=11" in cmd and "ftpair:node.role=" + role in cmd)
    rc, _, err = s.virt("deploy", "--spec", spec)
    s.check("second deploy of a live pair refused", rc != 0 and "already has node a" in err, err)

    # ---- lifecycle event: qemu killed under libvirt (a crash) reaches the subscriber ----
    w = subprocess.Popen([V.FTPAIR_VIRT, "watch", "--uri", V.URI, "--domain", "ftvp1-b", "--until-died",
                          "--timeout-s", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = w.stdout.readline()
    s.check("watch subscribed", '"subscribed":true' in first, first.strip())
    qpid = V.read_pid("/run/libvirt/qemu/ftvp1-b.pid")
    t0 = time.monotonic()
    os.kill(qpid, 9)
    out, werr = w.communicate(timeout=40)
    ev = [json.loads(l) for l in out.splitlines() if l.strip()]
    died = [e for e in ev if e.get("peer_died")]
    s.check("crash event reached the subscriber", w.returncode == 0 and died and died[0]["detail"] == "failed",
            "%s rc=%d %.2fs %s" % (out.strip(), w.returncode, time.monotonic() - t0, werr.strip()))

    # ---- a subscriber that comes after the death: the domain's state stands for the missed event ----
    p = subprocess.run([V.FTPAIR_VIRT, "watch", "--uri", V.URI, "--domain", "ftvp1-b", "--until-died", "--timeout-s", "10"],
                       capture_output=True, text=True, timeout=30)
    ev = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    late = [e for e in ev if e.get("peer_died")]
    s.check("a watch started on the dead domain reports it at once (found at subscription)",
            p.returncode == 0 and late and late[0]["event"] == "stopped" and
            late[0]["detail"].endswith(", found at subscription"), p.stdout.strip() + " " + p.stderr.strip())

    # ---- boot verification: tampered image refused, by deploy's own start and by virsh start ----
    with open(img, "r+b") as f:
        f.write(b"tampered")
    p = s.virsh("start", "ftvp1-b")
    s.check("virsh start of a tampered image refused", p.returncode != 0, p.stderr.strip())
    s.check("refusal names file, expected and found digest",
            img in p.stderr and "expected sha256" in p.stderr and V.sha256(img) in p.stderr, p.stderr.strip())
    s.check("refused domain is not running", s.domstate("ftvp1-b") == "shut off", s.domstate("ftvp1-b"))
    with open(img, "r+b") as f:
        f.write(b"\0" * 8)
    p = s.virsh("start", "ftvp1-b")
    s.check("virsh start with the allow-listed image works", p.returncode == 0, p.stderr.strip())
    # A domain that is not ours passes the hook untouched.
    other = s.make_image("other.img", fill=b"x")
    xml = ("<domain type='qemu'><name>ftv-other</name><memory unit='MiB'>32</memory><os><type arch='x86_64' "
           "machine='pc'>hvm</type></os><devices><disk type='file' device='disk'><source file='%s'/>"
           "<target dev='vda' bus='virtio'/><readonly/></disk></devices></domain>" % other)
    with open(os.path.join(s.dir, "other.xml"), "w") as f:
        f.write(xml)
    p = s.virsh("create", os.path.join(s.dir, "other.xml"))
    s.check("unmanaged domain is not checked by the hook", p.returncode == 0, p.stderr.strip())
    s.virsh("destroy", "ftv-other")

    # ---- fencing: destroy (and suspend) confirmed by libvirt ----
    rc, rep, err = s.virt("fence", "--spec", spec, "--node", "b", "--action", "suspend", "--deadline-ms", "10000")
    s.check("fence suspend ok", rc == 0 and rep["ok"], err)
    s.check("suspended peer is paused", s.domstate("ftvp1-b") == "paused", s.domstate("ftvp1-b"))
    rc, rep, err = s.virt("fence", "--spec", spec, "--node", "b", "--deadline-ms", "10000")
    s.check("fence destroy ok", rc == 0 and rep["ok"], err)
    s.check("fenced peer is shut off", s.domstate("ftvp1-b") == "shut off", s.domstate("ftvp1-b"))
    fence_s = rep["seconds"] if rep else -1
    rc, rep, err = s.virt("fence", "--spec", spec, "--node", "b", "--deadline-ms", "10000")
    s.check("fencing an already stopped peer is ok", rc == 0, err)

    # ---- warm pool: replace the destroyed node from the pool, then refill ----
    rc, rep, err = s.virt("pool", "fill", "--spec", spec)
    s.check("pool fill", rc == 0 and len(rep["added"]) == 1, err)
    s.check("spare is paused", s.domstate("ftvp1-spare-0") == "paused", s.domstate("ftvp1-spare-0"))
    xml = s.virsh("dumpxml", "ftvp1-spare-0").stdout
    s.check("spare commissioned as standby with both peers",
            "ftpair:node.role=standby" in xml and "ftpair:peer.candidates=%s.1:50051,%s.2:50051" % (V.NET, V.NET) in xml)
    rc, rep, err = s.virt("pool", "replace", "--spec", spec, "--failed", "a")
    s.check("replace refuses a node that still runs", rc != 0 and "fence it first" in err, err)
    rc, rep, err = s.virt("pool", "replace", "--spec", spec, "--failed", "b")
    s.check("pool replace ok", rc == 0 and rep["domain"] == "ftvp1-spare-0", err)
    s.check("replacement runs", s.domstate("ftvp1-spare-0") == "running", s.domstate("ftvp1-spare-0"))
    s.check("failed node retired", s.domstate("ftvp1-b") == "absent", s.domstate("ftvp1-b"))
    s.check("pool refilled", rep is not None and isinstance(rep.get("refill"), dict) and len(rep["refill"]["added"]) == 1 and
            s.domstate(rep["refill"]["added"][0]["domain"]) == "paused", json.dumps(rep))
    rc, st, err = s.virt("pool", "status", "--spec", spec)
    members = {d["node"]: d for d in st["domains"] if d["state"] == "member"} if st else {}
    s.check("spare is now member b as standby",
            members.get("b", {}).get("domain") == "ftvp1-spare-0" and members["b"]["role"] == "standby", json.dumps(st))
    log_line = "replace_s=%.3f refill_s=%.2f fence_s=%.2f" % (rep["replace_s"], rep["refill_s"], fence_s) if rep else ""
    V.log(log_line)

    # ---- ordered shutdown: drain standby then active, VMs standby then active then spares, networks ----
    rc, rep, err = s.virt("shutdown", "--spec", spec, "--acpi-timeout-ms", "1500", "--drain-timeout-ms", "200",
                          timeout=180)
    s.check("shutdown ok", rc == 0, err)
    steps = [(x["step"], x.get("domain", x.get("network"))) for x in rep["steps"]] if rep else []
    want = [("drain", "ftvp1-spare-0"), ("drain", "ftvp1-a"), ("final_checkpoint", None), ("vm", "ftvp1-spare-0"), ("vm", "ftvp1-a"), ("vm", "ftvp1-spare-1"),
            ("network", "ftvp1-mgmt")]
    s.check("shutdown order: drain standby, active; final checkpoint; VMs standby, active, spare; then the network",
            steps == want, json.dumps(steps))
    s.check("drain reports no daemon", rep is not None and
            all("no daemon answered" in x["result"] for x in rep["steps"] if x["step"] == "drain") and
            [x["result"] for x in rep["steps"] if x["step"] == "final_checkpoint"] == ["skipped: no active daemon answered"],
            json.dumps(rep and rep["steps"]))
    s.check("VMs stopped via ACPI fallback to destroy", rep is not None and
            all(x["result"] in ("destroyed after acpi timeout", "acpi shutdown", "destroyed (paused)")
                for x in rep["steps"] if x["step"] == "vm"), json.dumps(rep))
    s.check("network released", s.virsh("net-info", "ftvp1-mgmt").returncode != 0)
    for d in ("ftvp1-a", "ftvp1-spare-0", "ftvp1-spare-1"):
        s.check("%s shut off" % d, s.domstate(d) == "shut off", s.domstate(d))

    # ---- teardown with reuse, then a new pair picks up the retained instances ----
    rc, rep, err = s.virt("teardown", "--spec", spec, "--reuse", "--acpi-timeout-ms", "0")
    s.check("teardown --reuse ok", rc == 0, err)
    retained = [x["domain"] for x in rep["steps"] if x["step"] == "retain"] if rep else []
    s.check("members retained, spare undefined",
            sorted(retained) == ["ftvp1-a", "ftvp1-spare-0"] and s.domstate("ftvp1-spare-1") == "absent", json.dumps(rep))
    spec2 = s.write_spec("ftvp2", image=img, reuse="same-image", name="spec2.yaml")
    rc, rep, err = s.virt("deploy", "--spec", spec2)
    actions = sorted(n["action"] for n in rep["nodes"]) if rep else []
    s.check("deploy of p2 reuses both retained instances",
            rc == 0 and actions == ["reused ftvp1-a", "reused ftvp1-spare-0"], "%s %s" % (actions, err))
    s.check("reused instances run under the new names",
            s.domstate("ftvp2-a") == "running" and s.domstate("ftvp2-b") == "running"
            and s.domstate("ftvp1-a") == "absent")
    xml = s.virsh("dumpxml", "ftvp2-b").stdout
    s.check("reused instance carries the new pair's strings", "ftpair:pair=ftvp2" in xml and "ftpair:node.id=b" in xml)
    spec3 = s.write_spec("ftvp3", image=other, reuse="same-image", name="spec3.yaml")
    s.virt("teardown", "--spec", spec2, "--reuse", "--acpi-timeout-ms", "0")
    with open(other, "r+b") as f:
        f.write(b"y")
    rc, rep, err = s.virt("deploy", "--spec", spec3)
    s.check("deploy of a tampered image refused at start by the hook",
            rc == 1 and other in err and "expected sha256" in err and s.domstate("ftvp3-a") == "shut off", err)
    s.virsh("undefine", "ftvp3-a")
    with open(other, "r+b") as f:
        f.write(b"x")
    rc, rep, err = s.virt("deploy", "--spec", spec3)
    s.check("a different image does not reuse", rc == 0 and all(n["action"] == "defined" for n in rep["nodes"]),
            json.dumps(rep))
    s.virt("teardown", "--spec", spec3, "--acpi-timeout-ms", "0")
    for d in ("ftvp2-a", "ftvp2-b"):
        s.virsh("undefine", d)

    # ---- unreachable libvirt: refused connection, and a peer that never answers ----
    bad = open(spec).read().replace(V.URI, "qemu+tcp://127.0.0.1:9/system")
    with open(os.path.join(s.dir, "bad.yaml"), "w") as f:
        f.write(bad)
    rc, _, err = s.virt("deploy", "--spec", os.path.join(s.dir, "bad.yaml"), "--connect-timeout-ms", "2000")
    s.check("refused URI: clear error", rc == 1 and "cannot connect to libvirt at qemu+tcp://127.0.0.1:9/system" in err, err)
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)  # accepts TCP but never speaks libvirt RPC
    port = mute.getsockname()[1]
    with open(os.path.join(s.dir, "mute.yaml"), "w") as f:
        f.write(open(spec).read().replace(V.URI, "qemu+tcp://127.0.0.1:%d/system" % port))
    t0 = time.monotonic()
    rc, _, err = s.virt("deploy", "--spec", os.path.join(s.dir, "mute.yaml"), "--connect-timeout-ms", "1500")
    took = time.monotonic() - t0
    s.check("silent libvirt: fails within the deadline", rc == 1 and "within 1500 ms" in err and took < 4,
            "%.2fs %s" % (took, err))
    t0 = time.monotonic()
    rc, rep, err = s.virt("fence", "--spec", os.path.join(s.dir, "mute.yaml"), "--node", "b", "--domain", "ftvp1-b",
                          "--deadline-ms", "1000")
    took = time.monotonic() - t0
    s.check("fencer against a silent libvirt fails within its deadline",
            rc == 1 and took < 3 and "not confirmed stopped within 1000 ms" in err, "%.2fs %s" % (took, err))
    mute.close()

sys.exit(s.exit_code())
