"""Fixture for the ftpair-virt tests: a real libvirtd (qemu:///system, TCG) started by the test.

    import virtutil as V
    with V.VirtSession() as s:        # virtlogd + libvirtd (+ the qemu hook), cleaned up on exit
        s.check("name", cond, "detail")
    sys.exit(s.exit_code())

libvirtd reads /etc/libvirt/hooks/qemu only at its start, so the session installs the hook first
and starts the daemons itself. If a libvirtd is already running (not ours), the session uses it,
never stops it, and reports s.hook_active = False. Daemons we start are stopped by PID.
"""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FTPAIR_VIRT = os.path.abspath(os.environ.get("FTPAIR_VIRT", os.path.join(REPO, "build", "virt", "ftpair-virt")))
FTPAIR_COMMISSION = os.environ.get("FTPAIR_COMMISSION", os.path.join(os.path.dirname(FTPAIR_VIRT), "ftpair-commission"))
HOOK = "/etc/libvirt/hooks/qemu"
HOOK_MARK = "# installed by the ftpair-virt tests"
LOCK = "/run/ftpair-virt.lock"
URI = "qemu:///system"
SKIP = 77
NET = "198.19.253"  # the test pairs' management subnet
NFT_TABLE = "ftpair_virt_libvirt_tcp"
_T0 = time.monotonic()


def ctl_status(ftpairctl, addr, timeout=2):
    """Control.Status of the daemon at addr (ip:port) through ftpairctl, as a dict; None when it
    does not answer."""
    try:
        p = subprocess.run([ftpairctl, "--addr", addr, "--timeout", str(timeout), "--json", "status"],
                           capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def log(msg):
    sys.stdout.write("[%7.2f] %s\n" % (time.monotonic() - _T0, msg))
    sys.stdout.flush()


def require():
    if os.geteuid() != 0:
        print("SKIP: needs root (libvirtd, networks)")
        sys.exit(SKIP)
    for b in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"):
        if shutil.which(b) is None and not os.path.exists("/usr/sbin/" + b):
            print("SKIP: %s is not installed (tools/install-deps.sh: libvirt-daemon-system qemu-system-x86)" % b)
            sys.exit(SKIP)
    if not os.path.exists(FTPAIR_VIRT):
        print("FAIL: %s not built" % FTPAIR_VIRT)
        sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


class VirtSession:
    def __init__(self, prefix="ftv", libvirt_tcp=False):
        self.prefix = prefix
        # libvirtd also on TCP port 16509, without authentication, for daemons in the guests
        # (lifecycle events, fencing) at qemu+tcp://<host_address>/system. Lab only: an nftables
        # rule keeps everyone but loopback and the test pairs' management subnet out. A real
        # deployment uses qemu+tls with client certificates.
        self.libvirt_tcp = libvirt_tcp
        self.passed = 0
        self.failed = 0
        self.started = []       # (name, pid) of daemons we started
        self.hook_active = False
        self.dir = None
        self._lock = None
        self._hook_backup = None
        self._reaper = None
        self._answering = False  # libvirtd answered virsh at least once
        self._nft = False
        self.on_exit = []       # argv lists run at exit, after the domains are gone

    # ---- checks ----
    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            log("PASS %s %s" % (name, detail))
        else:
            self.failed += 1
            log("FAIL %s %s" % (name, detail))
        return cond

    def exit_code(self):
        return 0 if self.failed == 0 and self.passed > 0 else 1

    # ---- tools ----
    def run(self, *args, timeout=120, check=False):
        p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("%s: rc=%d %s" % (" ".join(args), p.returncode, p.stderr.strip()))
        return p

    def virt(self, *args, timeout=120):
        """Runs ftpair-virt; returns (rc, report-or-None, stderr)."""
        p = self.run(FTPAIR_VIRT, *args, timeout=timeout)
        rep = None
        for line in p.stdout.splitlines():
            try:
                rep = json.loads(line)
            except ValueError:
                pass
        return p.returncode, rep, p.stderr.strip()

    def virsh(self, *args, timeout=60):
        return self.run("virsh", "-c", URI, *args, timeout=timeout)

    def domstate(self, name):
        p = self.virsh("domstate", name)
        return p.stdout.strip() if p.returncode == 0 else "absent"

    def make_image(self, name, size=1 << 20, fill=b"\0"):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(fill * size)
        return path

    def write_spec(self, pair, nodes_extra="", image=None, pool=0, reuse="none", name="spec.yaml", kernel=None,
                   nics=None, config="{failover.fence: libvirt}", memory_mib=None, guest_daemon=False,
                   cmdline_extra=""):
        """A spec for a pair on this host: diskless-BIOS domains booting a blank image (or a kernel)."""
        lines = ["pair:", "  name: %s" % pair, "  allowlist:"]
        files = [image] if image else [kernel[0], kernel[1]]
        for f in files:
            lines.append("    %s: %s" % (f, sha256(f)))
        # 198.19.253.0/24: inside the benchmarking range, away from the pair lab's 198.18.3.0/24;
        # the host's address on the created network keeps drain probes on that local bridge.
        lines += ["  allowlist_dir: %s" % os.path.join(self.dir, "allow"), "  reuse: %s" % reuse,
                  "  host_address: %s.254/24" % NET]
        if pool:
            lines.append("  pool: {size: %d, addresses: [%s]}" % (
                pool, ", ".join("%s.%d/24" % (NET, 10 + i) for i in range(pool))))
        if guest_daemon:
            lines.append("  guest_daemon: true")
        if config:
            lines.append("  config: %s" % config)
        lines.append("nodes:")
        for node, role, ip in (("a", "active", NET + ".1/24"), ("b", "standby", NET + ".2/24")):
            lines += ["  %s:" % node, "    uri: %s" % URI, "    role: %s" % role, "    memory_mib: %d" % (memory_mib or (128 if kernel else 32))]
            if image:
                lines.append("    disk: %s" % image)
            else:
                lines += ["    kernel: %s" % kernel[0], "    initrd: %s" % kernel[1],
                          "    cmdline: console=ttyS0 panic=-1 quiet%s" % ((" " + cmdline_extra) if cmdline_extra else ""),
                          "    serial_log: %s" % os.path.join(self.dir, "%s-%s.serial" % (pair, node))]
            lines.append("    management: {network: %s-mgmt, address: %s}" % (pair, ip))
            if nics:
                lines.append("    nics: [%s]" % ", ".join(nics))
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n" + nodes_extra)
        return path

    # ---- lifecycle ----
    def __enter__(self):
        self._lock = open(LOCK, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.dir = tempfile.mkdtemp(prefix="ftpair-virt-")
        os.chmod(self.dir, 0o755)  # qemu runs as libvirt-qemu and must read the images
        # The network driver keeps per-network MAC lists here even without dnsmasq; a package
        # install creates it, a bare container may not have it.
        os.makedirs("/var/lib/libvirt/dnsmasq", exist_ok=True)
        running = read_pid("/run/libvirtd.pid")
        if running and pid_alive(running):
            log("libvirtd %d already running (not ours): the qemu hook cannot be installed for it" % running)
            if self.libvirt_tcp:
                self._lock.close()
                shutil.rmtree(self.dir, ignore_errors=True)
                print("SKIP: a libvirtd not started by this test runs: it does not listen on TCP for the guests' daemons")
                sys.exit(SKIP)
        else:
            if self.libvirt_tcp:
                self._fence_libvirt_tcp()  # before anything is changed: a failure leaves nothing behind
            self._purge_stale()
            self._install_hook()
            self._start("virtlogd", ["virtlogd", "-d"], "/run/virtlogd.pid")
            # libvirtd in the foreground under a subreaper, so killed qemu processes are reaped
            # at once (see reaper.py); the reaper exits with it.
            # libvirtd's own messages go to a file, quoted if it does not come up.
            self._libvirtd_log = os.path.join(self.dir, "libvirtd.stderr")
            argv = ["libvirtd"]
            if self.libvirt_tcp:
                argv += ["--listen", "-f", self._libvirt_tcp_conf]
            with open(self._libvirtd_log, "w") as err:
                self._reaper = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "reaper.py")] + argv,
                                                stdout=err, stderr=subprocess.STDOUT)
            self.hook_active = True
        try:
            if self._reaper is not None:
                self._start("libvirtd", None, "/run/libvirtd.pid")
            # Wait until the daemon answers.
            end = time.monotonic() + 30
            while time.monotonic() < end:
                p = self.virsh("version", timeout=10)
                if p.returncode == 0:
                    self._answering = True
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError("libvirtd does not answer on %s (virsh: %s)" % (URI, (p.stderr or "").strip()[-300:]))
        except Exception as e:
            # Leave nothing behind for the next test to trip over, and say what libvirtd said.
            said = self._libvirtd_said()
            self.__exit__(None, None, None)
            raise RuntimeError("%s; libvirtd's output: %s" % (e, said or "(none)")) from None
        return self

    def _fence_libvirt_tcp(self):
        """libvirtd's TCP listener, unauthenticated (lab only), admitted from loopback and the
        test pairs' management subnet only (an nftables table, removed at exit)."""
        if shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"):
            self._lock.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            print("SKIP: nft is not installed (tools/install-deps.sh: nftables): libvirtd's TCP port cannot be fenced")
            sys.exit(SKIP)
        self._libvirt_tcp_conf = os.path.join(self.dir, "libvirtd.conf")
        with open(self._libvirt_tcp_conf, "w") as f:
            f.write('listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "0.0.0.0"\nauth_tcp = "none"\n')
        rules = os.path.join(self.dir, "libvirt-tcp.nft")
        with open(rules, "w") as f:
            f.write("table inet %s {\n  chain input {\n    type filter hook input priority 0; policy accept;\n"
                    "    meta nfproto ipv4 tcp dport 16509 ip saddr != { 127.0.0.0/8, %s.0/24 } drop\n"
                    "    meta nfproto ipv6 tcp dport 16509 drop\n  }\n}\n" % (NFT_TABLE, NET))
        subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)
        p = subprocess.run(["nft", "-f", rules], capture_output=True, text=True)
        if p.returncode != 0:
            self._lock.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError("nft: cannot fence libvirtd's TCP port to the test subnet: " + p.stderr.strip())
        self._nft = True

    def _purge_stale(self):
        """Removes what a killed earlier run of these tests left in libvirt's state: domains
        and networks named with the tests' prefix (ftv...), their qemu processes and bridges.
        Only called with no libvirtd running. Without it, libvirtd 9.0 restarts with the old
        network marked active, and with no dnsmasq installed it crashes (a NULL dnsmasq
        capability in dnsmasqCapsGetBinaryPath) before it answers anyone."""
        import glob
        gone = []
        for pidfile in glob.glob("/run/libvirt/qemu/ftv*.pid"):
            pid = read_pid(pidfile)
            try:
                with open("/proc/%d/comm" % pid) as f:
                    is_qemu = f.read().startswith("qemu")
            except (OSError, TypeError):
                is_qemu = False
            if pid and is_qemu:
                os.kill(pid, signal.SIGKILL)
                gone.append("qemu pid %d" % pid)
        for pattern in ("/run/libvirt/qemu/ftv*", "/run/libvirt/network/ftv*", "/etc/libvirt/qemu/ftv*.xml",
                        "/etc/libvirt/qemu/networks/ftv*.xml", "/etc/libvirt/qemu/networks/autostart/ftv*",
                        "/etc/libvirt/qemu/autostart/ftv*", "/var/lib/libvirt/dnsmasq/ftv*"):
            for path in glob.glob(pattern):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                gone.append(path)
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith("ftv") and not name.startswith("ftvbr"):  # ftvbr*: made by the tests themselves
                subprocess.run(["ip", "link", "del", name], capture_output=True)
                gone.append("link " + name)
        if gone:
            log("removed what an earlier run left: %s" % ", ".join(gone))

    def _libvirtd_said(self, n=15):
        path = getattr(self, "_libvirtd_log", None)
        if not path:
            return ""
        try:
            with open(path, errors="replace") as f:
                return " | ".join(line.strip() for line in f.readlines()[-n:])
        except OSError:
            return ""

    def _install_hook(self):
        os.makedirs(os.path.dirname(HOOK), exist_ok=True)
        if os.path.exists(HOOK):
            with open(HOOK) as f:
                old = f.read()
            if HOOK_MARK not in old:
                self._hook_backup = old
        with open(HOOK, "w") as f:
            f.write("#!/bin/sh\n%s\nexec %s verify-hook --allowlist-dir %s \"$@\"\n" % (
                HOOK_MARK, FTPAIR_VIRT, os.path.join(self.dir, "allow")))
        os.chmod(HOOK, 0o755)

    def _start(self, name, argv, pidfile):
        pid = read_pid(pidfile)
        if pid and pid_alive(pid):
            log("%s %d already running: using it" % (name, pid))
            return
        if argv:
            subprocess.run(argv, check=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            pid = read_pid(pidfile)
            if pid and pid_alive(pid):
                self.started.append((name, pid))
                log("started %s pid %d" % (name, pid))
                return
            time.sleep(0.05)
        raise RuntimeError("%s did not start" % name)

    def cleanup_domains(self):
        """Destroys and undefines every domain and network whose name starts with our prefix."""
        p = self.virsh("list", "--all", "--name")
        for name in p.stdout.split():
            if name.startswith(self.prefix):
                self.virsh("destroy", name)
                self.virsh("undefine", name)
        p = self.virsh("net-list", "--all", "--name")
        for name in p.stdout.split():
            if name.startswith(self.prefix):
                self.virsh("net-destroy", name)
                self.virsh("net-undefine", name)

    def __exit__(self, *exc):
        try:
            if self._answering:  # nothing of ours exists on a daemon that never answered
                self.cleanup_domains()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            log("cleanup: %s" % e)
        for argv in self.on_exit:
            self.run(*argv)
        for name, pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            log("stopped %s pid %d" % (name, pid))
        if self._reaper is not None:
            try:
                self._reaper.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._reaper.kill()
                self._reaper.wait()
        if self._nft:
            subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True)
        if self.hook_active:
            if self._hook_backup is not None:
                with open(HOOK, "w") as f:
                    f.write(self._hook_backup)
            elif os.path.exists(HOOK):
                os.unlink(HOOK)
        # FTPAIR_VIRT_KEEP=DIR keeps the run's files (the guests' serial logs among them) there.
        # A new directory below it each run: nothing already there is touched.
        keep = os.environ.get("FTPAIR_VIRT_KEEP")
        if keep:
            dest = os.path.join(keep, os.path.basename(self.dir))
            try:
                shutil.copytree(self.dir, dest, ignore=shutil.ignore_patterns("*.img", "*.qcow2", "initrd*", "vmlinuz*"))
                log("the run's files are kept in %s (FTPAIR_VIRT_KEEP)" % dest)
            except (OSError, shutil.Error) as e:
                log("FTPAIR_VIRT_KEEP: could not copy the run's files to %s: %s" % (dest, e))
        shutil.rmtree(self.dir, ignore_errors=True)
        log("%d passed, %d failed" % (self.passed, self.failed))
        self._lock.close()
        return False


def guest_boot_files(s, base_config, ftpaird):
    """The guests' kernel (the newest /boot/vmlinuz-*, copied where qemu may read it) and an
    initramfs with ftpair-commission as /init, ftpaird and `base_config` (mkinitramfs.py).
    Returns (kernel, initrd)."""
    import glob
    import re
    newest = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    kernel = os.path.join(s.dir, "vmlinuz")
    shutil.copy(newest, kernel)
    initrd = os.path.join(s.dir, "initrd.cpio")
    subprocess.run(["/usr/bin/python3", os.path.join(HERE, "mkinitramfs.py"), FTPAIR_COMMISSION, initrd,
                    "--daemon", ftpaird, "--base-config", os.path.join(HERE, base_config),
                    "--kernel-version", re.sub(r"^vmlinuz-", "", os.path.basename(newest))], check=True)
    log("initramfs with ftpaird: %.1f MiB" % (os.path.getsize(initrd) / 2**20))
    return kernel, initrd


class Results:
    """Figures a test measures: printed as RESULT lines and, with FTPAIR_BENCH_OUT set, appended
    there as JSON lines at the end (write())."""

    def __init__(self):
        self.lines = []

    def emit(self, name, value, unit, params):
        line = {"name": name, "value": round(value, 4), "unit": unit, "params": params}
        self.lines.append(line)
        print("RESULT " + json.dumps(line))

    def write(self):
        if os.environ.get("FTPAIR_BENCH_OUT") and self.lines:
            with open(os.environ["FTPAIR_BENCH_OUT"], "a") as f:
                for r in self.lines:
                    f.write(json.dumps(r) + "\n")

