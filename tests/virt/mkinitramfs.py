"""Writes a minimal newc initramfs: the static ftpair-commission as /init, a /dev/console node and
the mount points it needs.

    mkinitramfs.py <ftpair-commission> <out.cpio>
        commissioning only: /init derives the role, prints it and powers off.
    mkinitramfs.py <ftpair-commission> <out.cpio> --daemon FTPAIRD --base-config YAML \
                   [--kernel-version V]
        also the daemon: ftpaird (a build without -march=native: the TCG CPU has no AVX-512), every
        shared library it needs (ldd), the DPDK drivers it loads from the plugin directory
        (mempool ring, null, af_packet and virtio ports, with the buses they need), the kernel modules
        of the virtio NIC and uio_pci_generic
        (from modules.dep, in load order) and the base config. /init then brings the management
        interface up and runs ftpaird (virt/guest.h)."""

import argparse
import os
import re
import stat
import subprocess

PLUGIN_DIR = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0"
# The buses come in as the drivers' own libraries (ldd), once: a second copy in the plugin
# directory would register its bus twice.
PLUGINS = ("librte_mempool_ring.so.23", "librte_net_null.so.23", "librte_net_af_packet.so.23",
           "librte_net_virtio.so.23")
# The management NIC's driver, uio_pci_generic for the dataplane NICs DPDK drives, and the ACPI
# power button with evdev (an ACPI shutdown from the host stops ftpaird cleanly).
MODULES = ("virtio_pci", "virtio_net", "uio_pci_generic", "button", "evdev")


class Cpio:
    def __init__(self, out):
        self.out, self.ino, self.dirs = out, 1, set()

    def entry(self, name, mode, data=b"", rdev=(0, 0)):
        namez = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0))
        self.ino += 1
        self.out.write(hdr.encode() + namez)
        self.out.write(b"\0" * ((4 - (110 + len(namez)) % 4) % 4))
        self.out.write(data)
        self.out.write(b"\0" * ((4 - len(data) % 4) % 4))

    def mkdirs(self, path):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self.entry(d, stat.S_IFDIR | 0o755)

    def file(self, name, src_or_data, mode=0o755):
        name = name.lstrip("/")
        self.mkdirs(os.path.dirname(name))
        data = src_or_data if isinstance(src_or_data, bytes) else open(src_or_data, "rb").read()
        self.entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self.mkdirs(os.path.dirname(name.lstrip("/")))
        self.entry(name.lstrip("/"), stat.S_IFLNK | 0o777, target.encode())


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m:
            libs.append(m.group(1))
        elif "not found" in line:
            raise SystemExit("mkinitramfs: %s: %s" % (path, line.strip()))
    return libs


def module_order(kver):
    base = "/lib/modules/%s" % kver
    deps = {}
    for line in open(base + "/modules.dep"):
        mod, _, rest = line.partition(":")
        deps[os.path.basename(mod)[:-3]] = (mod, rest.split())
    order = []
    for want in MODULES:
        mod, rest = deps[want]
        # modprobe loads the dependency list back to front, then the module itself.
        for p in list(reversed(rest)) + [mod]:
            full = os.path.join(base, p)
            if full not in order:
                order.append(full)
    return order


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("init")
    ap.add_argument("out")
    ap.add_argument("--daemon")
    ap.add_argument("--base-config")
    ap.add_argument("--kernel-version")
    a = ap.parse_args()
    with open(a.out, "wb") as out:
        c = Cpio(out)
        c.entry(".", stat.S_IFDIR | 0o755)  # the root itself: DPDK refuses a world-writable path
        for d in ("dev", "proc", "sys", "run/ftpair", "tmp", "var"):
            c.mkdirs(d)
        c.symlink("var/run", "../run")  # DPDK's runtime directory is /var/run/dpdk
        c.entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
        c.file("init", a.init)
        if a.daemon:
            # Merged /usr: every library goes to usr/lib/x86_64-linux-gnu, /lib and /lib64 link there.
            c.mkdirs("usr/lib/x86_64-linux-gnu")
            c.symlink("lib", "usr/lib")
            c.symlink("lib64", "usr/lib/x86_64-linux-gnu")
            # Without its debug info (a third of the initramfs otherwise).
            stripped = a.out + ".ftpaird"
            subprocess.run(["objcopy", "--strip-debug", a.daemon, stripped], check=True)
            c.file("usr/sbin/ftpaird", stripped)
            os.unlink(stripped)
            libs = []
            for obj in [a.daemon] + [os.path.join(PLUGIN_DIR, p) for p in PLUGINS]:
                for lib in ldd(obj):
                    if os.path.basename(lib) not in [os.path.basename(x) for x in libs]:
                        libs.append(lib)
            for lib in libs:
                # Under its real name too: EAL probes for librte_eal.so.<major>.<minor>.
                real = os.path.realpath(lib)
                c.file("usr/lib/x86_64-linux-gnu/" + os.path.basename(real), real)
                if os.path.basename(lib) != os.path.basename(real):
                    c.symlink("usr/lib/x86_64-linux-gnu/" + os.path.basename(lib), os.path.basename(real))
            c.mkdirs(PLUGIN_DIR)
            for p in PLUGINS:
                # EAL loads the plugin directory's *.so and *.so.<ABI> files: the real name only.
                real = os.path.realpath(os.path.join(PLUGIN_DIR, p))
                c.file(PLUGIN_DIR + "/" + os.path.basename(real), real)
            mods = module_order(a.kernel_version or os.uname().release)
            for m in mods:
                c.file("usr/lib/ftpair/mod/" + os.path.basename(m), m, 0o644)
            c.file("usr/lib/ftpair/modules.list",
                   "".join("/lib/ftpair/mod/%s\n" % os.path.basename(m) for m in mods).encode(), 0o644)
            c.file("etc/ftpair/ftpaird.yaml", a.base_config, 0o644)
        c.entry("TRAILER!!!", 0)
    os.chmod(a.out, 0o644)


if __name__ == "__main__":
    main()
