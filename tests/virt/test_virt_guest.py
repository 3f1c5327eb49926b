#!/usr/bin/python3
"""Commissioning inside real guests: a Debian kernel boots a tiny initramfs whose /init is the
static ftpair-commission (virt/commission_init.cc, the same parser as ftpair-virt). It reads the
SMBIOS type 11 strings that deploy put in the domain, prints the role it derived on the serial
console (a file) and powers off. Both nodes of a pair, TCG, real libvirtd. Also the host-side
`ftpair-virt commission` on a prepared sysfs tree. Slow: two TCG kernel boots."""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import virtutil as V

V.require()
kernels = sorted(glob.glob("/boot/vmlinuz-*"))
if not kernels:
    print("SKIP: no /boot/vmlinuz-* (tools/install-deps.sh: linux-image-cloud-amd64)")
    sys.exit(V.SKIP)
if not os.path.exists(V.FTPAIR_COMMISSION):
    print("FAIL: %s not built" % V.FTPAIR_COMMISSION)
    sys.exit(1)


def type11(strings):
    body = b"".join(s.encode() + b"\0" for s in strings) + b"\0"
    return bytes([11, 5, 0, 0x11, len(strings)]) + body


with V.VirtSession() as s:
    # ---- host side: ftpair-virt commission on a prepared sysfs tree ----
    dmi = os.path.join(s.dir, "dmi")
    os.makedirs(os.path.join(dmi, "entries", "11-0"))
    with open(os.path.join(dmi, "entries", "11-0", "raw"), "wb") as f:
        f.write(type11(["ftpair:node.id=a", "ftpair:node.role=active", "ftpair:management.grpc=10.0.0.1:50051",
                        "ftpair:peer.grpc=10.0.0.2:50051", "ftpair:failover.fence=libvirt"]))
    out_cfg = os.path.join(s.dir, "derived.yaml")
    rc, rep, err = s.virt("commission", "--dmi-dir", dmi, "--config-drive", os.path.join(s.dir, "none"),
                          "--write-config", out_cfg)
    s.check("commission derives role from SMBIOS", rc == 0 and rep and rep["node.role"]["value"] == "active", err)
    cfg = open(out_cfg).read() if os.path.exists(out_cfg) else ""
    s.check("commission writes the config overrides", "role: active" in cfg and "fence: libvirt" in cfg, cfg)
    # The real daemon accepts what commissioning derives: merged into a lab node config that
    # leaves the role open, checked by `ftpaird --check`.
    ftpaird = os.environ.get("FTPAIRD", os.path.join(os.path.dirname(os.path.dirname(V.FTPAIR_VIRT)), "control", "ftpaird"))
    base = subprocess.run(["bash", "-c", "source %s/tools/lab/node-config.sh; ftpair_lab_node_config a" % V.REPO],
                          capture_output=True, text=True).stdout
    dmi2 = os.path.join(s.dir, "dmi2")
    os.makedirs(os.path.join(dmi2, "entries", "11-0"))
    with open(os.path.join(dmi2, "entries", "11-0", "raw"), "wb") as f:
        f.write(type11(["ftpair:node.id=a", "ftpair:node.role=active", "ftpair:management.grpc=198.18.3.1:50051",
                        "ftpair:peer.grpc=198.18.3.2:50051"]))
    with open(os.path.join(s.dir, "base.yaml"), "w") as f:
        f.write(base)
    merged = os.path.join(s.dir, "merged.yaml")
    rc, rep, err = s.virt("commission", "--dmi-dir", dmi2, "--config-drive", "", "--base",
                          os.path.join(s.dir, "base.yaml"), "--write-config", merged)
    s.check("commission merges into a base config without a role", rc == 0 and "role: active" in open(merged).read(), err)
    if os.path.exists(ftpaird):
        p = s.run(ftpaird, "--check", "-c", merged)
        s.check("ftpaird --check accepts the commissioned config", p.returncode == 0, (p.stdout + p.stderr).strip())
    else:
        V.log("ftpaird not built (%s): config check skipped" % ftpaird)
    with open(os.path.join(s.dir, "base2.yaml"), "w") as f:
        f.write(base.replace("  id: a\n", "  id: a\n  role: standby\n"))
    rc, rep, err = s.virt("commission", "--dmi-dir", dmi2, "--config-drive", "", "--base",
                          os.path.join(s.dir, "base2.yaml"))
    s.check("explicit role contradicting SMBIOS refused", rc == 2 and "base config sets node.role: 'standby'" in err, err)
    drive = os.path.join(s.dir, "drive")
    os.makedirs(drive)
    with open(os.path.join(drive, "ftpair.yaml"), "w") as f:
        f.write("node:\n  role: standby\n")
    rc, rep, err = s.virt("commission", "--dmi-dir", dmi, "--config-drive", drive)
    s.check("contradicting config drive refused with why", rc == 2 and "contradictory node.role" in err, err)
    rc, rep, err = s.virt("commission", "--dmi-dir", os.path.join(s.dir, "empty"), "--config-drive", drive + "x")
    s.check("no environment refused with why", rc == 2 and "nothing to derive a role from" in err, err)

    # ---- guests ----
    kernel = os.path.join(s.dir, "vmlinuz")
    shutil.copy(kernels[-1], kernel)
    initrd = os.path.join(s.dir, "initrd.cpio")
    subprocess.run(["/usr/bin/python3", os.path.join(V.HERE, "mkinitramfs.py"), V.FTPAIR_COMMISSION, initrd], check=True)
    spec = s.write_spec("ftvg", kernel=(kernel, initrd))
    t0 = time.monotonic()
    rc, rep, err = s.virt("deploy", "--spec", spec)
    s.check("deploy of kernel+initrd guests", rc == 0, err)
    want = {"a": "role=active node=a", "b": "role=standby node=b"}
    seen = {}
    end = time.monotonic() + 240
    while time.monotonic() < end and len(seen) < 2:
        for node in want:
            log = os.path.join(s.dir, "ftvg-%s.serial" % node)
            if node not in seen and os.path.exists(log):
                for line in open(log, errors="replace"):
                    if line.startswith("ftpair-commission:"):
                        seen[node] = (line.strip(), time.monotonic() - t0)
        time.sleep(0.5)
    for node, text in want.items():
        line, took = seen.get(node, ("(nothing on the serial console)", -1))
        s.check("guest %s derived %s from its SMBIOS strings" % (node, text), text in line and "refused" not in line,
                "%s after %.1fs" % (line, took))
    s.check("guest read the SMBIOS type 11 entries from sysfs",
            "source=SMBIOS (/sys/firmware/dmi/entries/11-*)" in seen.get("b", ("",))[0], seen.get("b", ("",))[0])
    peer_ok = "peer=%s.2:50051" % V.NET in seen.get("a", ("",))[0]
    s.check("guest a derived its peer", peer_ok, seen.get("a", ("",))[0])
    end = time.monotonic() + 30
    while time.monotonic() < end and not all(s.domstate("ftvg-" + n) == "shut off" for n in want):
        time.sleep(0.5)
    s.check("guests powered off after commissioning", all(s.domstate("ftvg-" + n) == "shut off" for n in want))
    s.virt("teardown", "--spec", spec, "--acpi-timeout-ms", "0")

sys.exit(s.exit_code())
