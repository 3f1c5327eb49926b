"""Shared helpers for the ftpair lab integration tests (tests/lab/test_*.py).

A lab test:
    import labutil as L
    L.require_lab()                       # exit 77 (skip) when the lab cannot run here
    with L.LabSession() as lab:           # always "ftpair-lab down" on exit/signal/timeout
        lab.setup()                       # down --purge; up
        lab.start_node("a")
        chk = lab.checker
        chk.check("something", cond, "detail")
    # LabSession.__exit__ prints "N passed, M failed"; use lab.exit_code()

Everything talks to ftpaird only through /metrics, the pidfile and traffic.
"""

import atexit
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
LAB_DIR = os.path.join(REPO, "tools", "lab")
FTPAIR_LAB = os.path.join(LAB_DIR, "ftpair-lab")
TRAFFIC = os.path.join(LAB_DIR, "traffic.py")
MALFORMED = os.path.join(LAB_DIR, "malformed.py")
NATTOOL = os.path.join(LAB_DIR, "nattool.py")
PY = "/usr/bin/python3"          # Debian's python (has scapy)
FTPAIRD = os.environ.get("FTPAIRD", os.path.join(REPO, "build", "control", "ftpaird"))
FTPAIRCTL = os.environ.get("FTPAIRCTL", os.path.join(REPO, "build", "tools", "ftpairctl", "ftpairctl"))
PREFIX = os.environ.get("FTPAIR_LAB_PREFIX", "")
RUN = os.environ.get("FTPAIR_LAB_RUN", "/run/ftpair-lab")

SKIP = 77
LOCK_PATH = os.environ.get("FTPAIR_LAB_LOCK", "/run/ftpair-lab.lock")

CLIENT_IP = "198.18.1.10"
CLIENT2_IP = "198.18.1.11"       # second LAN host; target of the WAN VIP:8080 port-forward
SERVER_IP = "198.18.2.10"        # on the WAN segment
ROUTER_IP = "198.18.2.254"       # WAN-side router: the nodes' outside gateway
ROUTER_REMOTE_IP = "198.18.5.1"  # the router's end of the 1400-byte link to remote
REMOTE_IP = "198.18.5.10"        # behind the router (MTU 1400)
REMOTE_MTU = 1400
FORWARD_PORT = 8080              # TCP port-forward WAN VIP:8080 -> client2:8080
LAN_VIP = "198.18.1.1"
WAN_VIP = "198.18.2.1"
NAT_PORT_MIN, NAT_PORT_MAX = 20000, 60999
MGMT_IP = {"a": "198.18.3.1", "b": "198.18.3.2"}
METRICS_PORT = 9108
GRPC_PORT = 50051
ECHO_PORT = 7000                 # traffic.py echo-server in the server namespace

NAMESPACES = {"client": PREFIX + "client", "client2": PREFIX + "client2",
              "server": PREFIX + "server", "router": PREFIX + "router",
              "remote": PREFIX + "remote",
              "a": PREFIX + "ftpair-a", "b": PREFIX + "ftpair-b"}


def log(msg):
    sys.stdout.write("[%7.2f] %s\n" % (time.monotonic() - _T0, msg))
    sys.stdout.flush()


_T0 = time.monotonic()


def skip(reason):
    print("SKIP: %s" % reason)
    sys.stdout.flush()
    sys.exit(SKIP)


def require_lab(need_scapy=False, need=()):
    """Exit 77 unless this machine can run the lab (root, ip netns, binaries)."""
    if os.geteuid() != 0:
        skip("lab tests need root (network namespaces)")
    if not shutil.which("ip"):
        skip("iproute2 'ip' not found")
    try:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
        if r.returncode != 0:
            skip("'ip netns' unusable: %s" % r.stderr.decode(errors="replace").strip())
    except (OSError, subprocess.TimeoutExpired) as e:
        skip("'ip netns' unusable: %s" % e)
    for tool in ("ethtool", "curl") + tuple(need):
        if not shutil.which(tool):
            skip("'%s' not found" % tool)
    if not os.access(PY, os.X_OK):
        skip("%s not found" % PY)
    if not os.access(FTPAIRD, os.X_OK):
        skip("ftpaird not built: %s (set FTPAIRD=...)" % FTPAIRD)
    if need_scapy:
        r = subprocess.run([PY, "-c", "import scapy.layers.inet"], capture_output=True)
        if r.returncode != 0:
            skip("scapy missing for %s (apt-get install python3-scapy)" % PY)


class LabError(Exception):
    pass


def lab(*args, timeout=60, check=True, env=None):
    """Run tools/lab/ftpair-lab ARGS; return CompletedProcess (text).
    env: variables added to this process's environment for the run (e.g. FTPAIR_LAB_PMD,
    FTPAIR_LAB_MTU, FTPAIR_LAB_NAT_EXTRA: see the header of tools/lab/ftpair-lab)."""
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in env.items()})
    r = subprocess.run([FTPAIR_LAB] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=full_env)
    if check and r.returncode != 0:
        raise LabError("ftpair-lab %s failed (exit %d):\n%s%s"
                       % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
    return r


def ns_cmd(host, argv):
    return ["ip", "netns", "exec", NAMESPACES[host]] + [str(a) for a in argv]


def run_in(host, argv, timeout=30):
    """Run argv in a lab namespace; CompletedProcess (text), never raises on exit code."""
    try:
        return subprocess.run(ns_cmd(host, argv), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(e.cmd, 124, out, err + "\n(timed out after %ss)" % timeout)


def last_json(text):
    """The last line of text that parses as a JSON object, or None."""
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


class Background:
    """A process in a lab namespace whose stdout lines are collected."""

    def __init__(self, host, argv):
        self.argv = ns_cmd(host, argv)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines = []
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._reader, daemon=True)
        self._t.start()

    @property
    def pid(self):
        return self.proc.pid

    def _reader(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self):
        with self._lock:
            return list(self.lines)

    def wait_line(self, pred, timeout):
        """Wait until a line satisfies pred; return it or None."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = self.snapshot()
            for line in lines[seen:]:
                if pred(line):
                    return line
            seen = len(lines)
            if self.proc.poll() is not None and seen == len(self.snapshot()):
                return None
            time.sleep(0.05)
        return None

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=3.0):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            except OSError:
                pass
        # The process is gone, but its last lines (a client's JSON summary) may still be in the
        # pipe: the reader ends at EOF, after them.
        self._t.join(timeout)
        return self.proc.returncode


# -------------------------------------------------------------- metrics --

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...sorted)): float}."""
    res = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = float(value)
        except ValueError:
            continue
        key = (name, tuple(sorted(_LABEL.findall(labels))))
        res[key] = v
    return res


def metrics_url(node):
    return "http://%s:%d/metrics" % (MGMT_IP[node], METRICS_PORT)


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(node, timeout=2.0):
    """Parsed /metrics of a node, or None if it does not answer."""
    try:
        with _opener.open(metrics_url(node), timeout=timeout) as r:
            if r.status != 200:
                return None
            return parse_metrics(r.read().decode("utf-8", errors="replace"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


class NodeDown(LabError):
    """A metric was read from a node that did not answer /metrics: the test fails, loudly,
    instead of reading 0 (a dead standby must not pass as one with no misses)."""


def metric(m, name, **labels):
    """Value of one sample of a scrape (0.0 when the sample is absent). m is None (the node did
    not answer): NodeDown. Where a node may be down on purpose, check scrape() for None first."""
    if m is None:
        raise NodeDown("%s read from a node that did not answer /metrics" % name)
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def drops(m):
    """{reason: value} of ftpair_drops_total."""
    out = {}
    for (name, labels), v in (m or {}).items():
        if name == "ftpair_drops_total":
            d = dict(labels)
            if "reason" in d:
                out[d["reason"]] = out.get(d["reason"], 0.0) + v
    return out


def wait_until(fn, timeout, interval=0.1):
    """Poll fn() until truthy; return its last value. A node that does not answer (NodeDown)
    counts as not yet while time is left; if it still does not at the deadline, NodeDown."""
    deadline = time.monotonic() + timeout

    def attempt():
        try:
            return fn(), None
        except NodeDown as e:
            return None, e
    v, down = attempt()
    while not v and time.monotonic() < deadline:
        time.sleep(interval)
        v, down = attempt()
    if not v and down is not None:
        raise down
    return v


def kernel_snmp(host, proto="Ip"):
    """{counter: int} of one /proc/net/snmp section (e.g. "Ip") inside a lab namespace."""
    r = run_in(host, ["cat", "/proc/net/snmp"], timeout=10)
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith(proto + ":")]
    if len(rows) < 2:
        return {}
    try:
        return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}
    except ValueError:
        return {}


# --------------------------------------------------------------- nodes --

def node_pid(node):
    try:
        with open(os.path.join(RUN, "%s.pid" % node)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid):
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wipe_state(node):
    """Empty a (stopped) node's state dir: its next start is a cold start without snapshot."""
    d = os.path.join(RUN, "state-%s" % node)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d, exist_ok=True)


def config_refusal(env, node="a", role=None):
    """Whether ftpaird accepts the lab config that env produces: None when `ftpaird --check`
    accepts it (or when even the plain lab config fails the check: nothing to learn then),
    else the daemon's error text (which names the key and the reason)."""
    import tempfile

    def check(e):
        args = ["config", node] + (["--role", role] if role else [])
        r = lab(*args, env=e, check=False, timeout=20)
        if r.returncode != 0:
            return "ftpair-lab config failed: " + (r.stderr.strip() or r.stdout.strip())
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(r.stdout)
            path = f.name
        try:
            c = subprocess.run([FTPAIRD, "--check", "-c", path], capture_output=True, text=True,
                               timeout=20, stdin=subprocess.DEVNULL)
        finally:
            os.unlink(path)
        if c.returncode == 0:
            return None
        return (c.stderr.strip() or c.stdout.strip() or "exit %d" % c.returncode)[-400:]

    if check({k: v for k, v in (env or {}).items() if k == "FTPAIR_LAB_PMD"}) is not None:
        return None
    return check(env)


def node_log_tail(node, n=40):
    try:
        with open(os.path.join(RUN, "%s.log" % node), errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def role_timeline(n=10):
    """The last n lines of both nodes' logs that change or end a role (promotion, step-down,
    fencing, a missed-beat or unhealthy verdict, a fatal signal), merged by their timestamps
    and each prefixed with its node."""
    keys = (" is ACTIVE", " is STANDBY", "fenc", "promot", "missed heartbeats", "cannot service", "fatal signal",
            "stays ", "step", "switchover")
    rows = []
    for node in ("a", "b"):
        try:
            with open(os.path.join(RUN, "%s.log" % node), errors="replace") as f:
                rows += [(line[:30], node, line) for line in f if any(k in line for k in keys)]
        except OSError:
            pass
    rows.sort()
    return "".join("%s: %s" % (node, line) for _, node, line in rows[-n:]) or "(none)"


def node_log_events(node, n=30):
    """The last n lines of a node's log that say what happened to it: warnings, errors, role
    changes, fencing, the upgrade's steps and a crash's last words. A node's log is long, and a
    plain tail of it shows the most recent steady state rather than the event that failed a test."""
    keys = (" warn ", " error ", " critical ", "ACTIVE", "STANDBY", "fenc", "upgrade", "beside",
            "retir", "Segmentation", "Aborted", "terminate", "PANIC", "EAL: ", "fatal signal", "(+0x")
    try:
        with open(os.path.join(RUN, "%s.log" % node), errors="replace") as f:
            lines = [line for line in f if any(k in line for k in keys)]
    except OSError:
        return "(no log)"
    return "".join(lines[-n:])


def node_metric(node, name, scrape_timeout=1.0, **labels):
    """One sample of a node's /metrics, scraped now (0.0 when the sample is absent). A node that
    does not answer: NodeDown, which fails the test (run_main)."""
    s = scrape(node, timeout=scrape_timeout)
    if s is None:
        raise NodeDown("node %s does not answer /metrics (reading %s)" % (node, name))
    return metric(s, name, **labels)


def vip_owner(node):
    """ftpair_vip_owner of a node (1.0 or 0.0), or None if its /metrics does not answer."""
    s = scrape(node, timeout=0.5)
    return None if s is None else metric(s, "ftpair_vip_owner")


# ------------------------------------------------------------ ftpairctl --

def ctl(node, *args, timeout=20, rpc_timeout=5):
    """ftpairctl --json ARGS against a node's gRPC: (exit code, JSON document or None, stderr).

    rpc_timeout is ftpairctl's --timeout (the deadline of each call; None: ftpairctl's
    default); timeout bounds the whole run."""
    argv = [FTPAIRCTL, "--addr", "%s:%d" % (MGMT_IP[node], GRPC_PORT)]
    if rpc_timeout is not None:
        argv += ["--timeout", str(rpc_timeout)]
    argv += ["--json"] + [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(r.stdout) if r.stdout.strip() else None
    except ValueError:
        doc = None
    return r.returncode, doc, r.stderr.strip()


def status(node, **kw):
    """`ftpairctl status` of a node as a dict, or None if the call failed."""
    rc, doc, _ = ctl(node, "status", **kw)
    return doc if rc == 0 else None


# ------------------------------------------------------ two actives? --

class OwnerWatch:
    """Samples both nodes' VIP ownership (ftpair_vip_owner) every 20 ms in a thread until
    stop(): `both` lists the times both nodes owned the VIPs, `samples` counts the rounds.

    Two scrapes are never simultaneous: "x owns, then y owns" may be a clean hand-over that
    happened between them. With confirm (the default) a round counts as both owning only
    when x owned the VIPs before and after y was seen owning them: x, y, x scraped in turn,
    all three 1, and x alternates between the nodes. A pair seen in turn but not confirmed
    is counted apart (`unconfirmed`), for the record.

    confirm=False: every round scrapes `first`, then the other node, and both owning counts
    (no third scrape): stricter. Give `first` the node expected to take the role: then a
    positive means the new owner owned the VIPs before the old one last said it did, a real
    overlap, while a clean hand-over between the two scrapes (old owner scraped just before
    it is fenced, new one just after it takes over) cannot count as one."""

    def __init__(self, confirm=True, first="a"):
        self.confirm = confirm
        self.first = first
        self.both, self.samples, self.unconfirmed = [], 0, 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        x = self.first
        y = "b" if x == "a" else "a"
        while not self.stop_ev.is_set():
            if vip_owner(x) == 1 and vip_owner(y) == 1:
                if not self.confirm or vip_owner(x) == 1:
                    self.both.append(time.monotonic())
                else:
                    self.unconfirmed += 1
            self.samples += 1
            if self.confirm:
                x, y = y, x
            time.sleep(0.02)

    def stop(self):
        self.stop_ev.set()
        self.t.join(2)


# ---------------------------------------------------------- echo clients --

def start_client(lab, conns, seconds, rate=32768, op_timeout=8, host="client"):
    """Byte-checking kernel TCP echo connections from a LAN host's namespace (client, or
    client2) to the echo server (traffic.py echo-client --json) in the background; read with
    client_result(). rate: bytes/s per connection; op_timeout: traffic.py --op-timeout (None:
    its default)."""
    argv = [PY, TRAFFIC, "echo-client", "--host", SERVER_IP, "--port", ECHO_PORT,
            "--conns", conns, "--seconds", seconds, "--rate-bytes-per-s", rate]
    if op_timeout is not None:
        argv += ["--op-timeout", op_timeout]
    return lab.background(host, argv + ["--json"])


def client_result(bg, timeout):
    """Waits up to timeout s for start_client's process to end (then stops it); its JSON
    summary, or None."""
    deadline = time.monotonic() + timeout
    while bg.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    bg.stop()
    return last_json("\n".join(bg.snapshot()))


# -------------------------------------------------------------- checks --

class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def check(self, name, ok, detail=""):
        ok = bool(ok)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print("%s: %s%s" % ("PASS" if ok else "FAIL", name, (" -- " + detail) if detail else ""))
        sys.stdout.flush()
        return ok

    def skip(self, name, reason):
        self.skipped += 1
        print("SKIP: %s -- %s" % (name, reason))
        sys.stdout.flush()

    def summary(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.stdout.flush()


class _Abort(BaseException):
    """Raised from a signal handler or the global timer."""


class LabSession:
    """down; up; (your test); down -- whatever happens.

    deadline_s: the whole test is aborted (FAIL) after this many seconds.
    """

    def __init__(self, deadline_s=85, purge=True):
        self.checker = Checker()
        self.deadline_s = deadline_s
        self.purge = purge
        self.bg = []
        self._down_done = False
        self.aborted = None

    # -- lifecycle
    def __enter__(self):
        # One lab per machine: wait for anyone else's session (another test run, a bench, a
        # developer) before the deadline starts. The lock dies with the process.
        self._lab_lock = open(LOCK_PATH, "a+")
        t0 = time.monotonic()
        fcntl.flock(self._lab_lock, fcntl.LOCK_EX)
        if time.monotonic() - t0 > 1:
            log("lab: waited %.0f s for the lab lock" % (time.monotonic() - t0))
        atexit.register(self._teardown)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.alarm(int(self.deadline_s))
        return self

    def setup(self):
        """ftpair-lab down [--purge]; ftpair-lab up."""
        log("lab: down%s" % (" --purge" if self.purge else ""))
        lab("down", *(["--purge"] if self.purge else []), timeout=60)
        log("lab: up")
        lab("up", timeout=60)

    def _on_signal(self, signum, frame):
        raise _Abort("signal %d" % signum)

    def _on_alarm(self, signum, frame):
        raise _Abort("test deadline of %ds exceeded" % self.deadline_s)

    def __exit__(self, et, ev, tb):
        signal.alarm(0)
        if et is not None and et is not SystemExit:
            if et is _Abort:
                self.aborted = str(ev)
            elif issubclass(et, LabError):
                print(str(ev).rstrip())
                self.aborted = "ftpair-lab failed"
                self._say_what_the_nodes_said()
            else:
                import traceback
                traceback.print_exception(et, ev, tb)
                self.aborted = "%s: %s" % (et.__name__, ev)
            self.checker.check("test ran to completion", False, self.aborted)
        self._teardown()
        self.checker.summary()
        return et is _Abort or (et is not None and et is not SystemExit)

    def _say_what_the_nodes_said(self):
        """A node that stopped answering: is it alive, and what did its log say last? (Before the
        teardown, which stops the nodes and lets the next test overwrite their logs.)"""
        for node in ("a", "b"):
            pid = node_pid(node)
            alive = pid_alive(pid)
            print("---- node %s: pid %s, %s; its log's events ----" % (node, pid, "running" if alive else "not running"),
                  file=sys.stderr)
            print(node_log_events(node, 15).rstrip(), file=sys.stderr)
            print("---- node %s: its log's last lines ----" % node, file=sys.stderr)
            print(node_log_tail(node, 10).rstrip(), file=sys.stderr)
        # Last, so that an excerpt that keeps a long output's two ends still shows why a node
        # changed role, was fenced or died.
        print("---- both nodes: role changes, fencing and deaths, in time order ----", file=sys.stderr)
        print(role_timeline(10).rstrip(), file=sys.stderr)

    def _teardown(self):
        if self._down_done:
            return
        self._down_done = True
        # ignore further signals while cleaning up
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (ValueError, OSError):
                pass
        for b in self.bg:
            b.stop()
        try:
            r = lab("down", timeout=60, check=False)
            if r.returncode != 0:
                print("warning: ftpair-lab down failed:\n%s" % r.stderr)
        except Exception as e:   # noqa: BLE001 -- cleanup must not raise
            print("warning: ftpair-lab down: %s" % e)
        log("lab: down (cleanup)")

    def exit_code(self):
        return 0 if self.checker.failed == 0 and not self.aborted else 1

    # -- helpers
    def start_node(self, node, *extra, timeout=30, env=None, check=True):
        log("lab: start %s %s%s" % (node, " ".join(extra),
                                    (" (%s)" % " ".join("%s=%r" % kv for kv in sorted(env.items())))
                                    if env else ""))
        return lab("start", node, *extra, timeout=timeout, env=env, check=check)

    def background(self, host, argv):
        b = Background(host, argv)
        self.bg.append(b)
        return b

    def traffic(self, host, *args, timeout=30):
        return run_in(host, [PY, TRAFFIC] + [str(a) for a in args], timeout=timeout)


def run_main(main):
    """Entry point of a lab test script: exit with main()'s code; a LabError is a FAIL."""
    rc = 1
    try:
        rc = main()
    except LabError as e:
        print("FAIL: %s" % e)
        rc = 1
    sys.exit(rc)
