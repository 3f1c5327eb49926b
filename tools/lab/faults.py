#!/usr/bin/python3
"""Faults on the pair lab's management (and sync) link: the link between ftpair-a and ftpair-b.

The two nodes' management ports (mgmt0, 198.18.3.1 and .2) hang on the bridge ftpbr-mgmt by the
host-side veths a-mgmt and b-mgmt. Everything the nodes say to each other (fast UDP beats on
50052, gRPC on 50051: heartbeats, the sync stream, switchover and control calls) is forwarded by
that bridge from one port to the other. The faults act there, in the root namespace, on frames
forwarded between the two ports only: what the root namespace says to a node (the /metrics
scrapes of tests and benches, ftpairctl) is not forwarded between ports and is never touched, so
a test can watch the pair through any fault. This kernel has no netem and no NFQUEUE:

  loss:N            nftables (bridge family, forward hook): every frame between the two ports,
                    in both directions, dropped when `numgen random mod 100 < N` (ARP too)
  oneway:X>Y        IPv4 frames from node X's port to node Y's port all dropped, the other
                    direction untouched (ARP passes both ways, so the fault stays one-way)
  flap:UP:DOWN      a helper process adds and removes a drop-everything rule between the two
                    ports: UP seconds up, DOWN seconds down, starting with UP
  throttle:RATE     tc tbf on both host-side veths (the egress toward each node): RATE (e.g.
                    1mbit), burst 5 kB, at most 50 ms of queue; everything toward a node shares
                    it (beats, sync, and the tiny scrape requests; not the scrape answers)
  jitter:D:J        a userspace relay (below): each IPv4 frame between the nodes delayed by a
                    uniform random time in [D-J, D+J] ms, independently (so frames reorder when
                    J is larger than their spacing, as netem's jitter does)
  reorder-dup:R:P   the relay again: R% of frames held 12 ms (behind two or more 5 ms beats),
                    P% of frames sent twice (the copy 1 ms later), the rest at once
  none              nothing (a baseline)

The relay: nftables drops IPv4 frames forwarded between the two ports; a process in the root
namespace reads each one from an AF_PACKET socket on the port it entered by (taps see frames
before the bridge), waits, and writes it to the other port's socket: out of the host-side
veth into the other node, byte for byte. It runs at SCHED_FIFO priority 5 (the daemons' beat
threads run at 10) so that its own scheduling does not add tens of ms on this busy machine.
`--udp-only` (jitter:D:J:udp) relays only the fast beats and leaves TCP on the bridge.

Everything lives in the table `bridge <prefix>ftpair_fault`, in tbf qdiscs on the host-side
veths, and in helper processes listed in RUN/faults.pids. `clear` removes all of it, and
`ftpair-lab down` calls `clear`.

  faults.py apply SPEC [--seconds S]   apply (clears any previous fault first); with --seconds,
                                       hold it that long, then clear
  faults.py clear                      remove every fault and stop the helpers
  faults.py status                     what is applied now (table, qdiscs, helpers)

In Python:
    import faults
    with faults.inject("loss:5"):
        ...
"""

import argparse
import contextlib
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time

PREFIX = os.environ.get("FTPAIR_LAB_PREFIX", "")
RUN = os.environ.get("FTPAIR_LAB_RUN", "/run/ftpair-lab")
SELF = os.path.abspath(__file__)
PY = "/usr/bin/python3"
TABLE = re.sub(r"[^A-Za-z0-9_]", "_", PREFIX) + "ftpair_fault"
PIDS = os.path.join(RUN, "faults.pids")
RELAY_STATS = os.path.join(RUN, "faults-relay.json")
MGMT_IP = {"a": "198.18.3.1", "b": "198.18.3.2"}
BEAT_PORT = 50052
REORDER_HOLD_MS = 12.0
DUP_AFTER_MS = 1.0
TBF = ["burst", "5kb", "latency", "50ms"]


def port(node):
    """The host-side veth of a node's management port."""
    return "%s%s-mgmt" % (PREFIX, node)


def other(node):
    return "b" if node == "a" else "a"


def _run(argv, check=True, stdin=None):
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r


def nft(script):
    _run(["nft", "-f", "-"], stdin=script)


def _table_exists():
    return _run(["nft", "list", "table", "bridge", TABLE], check=False).returncode == 0


# ----------------------------------------------------------------- helpers --

def _proc_start(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _record_helper(pid):
    os.makedirs(RUN, exist_ok=True)
    with open(PIDS, "a") as f:
        f.write("%d %s\n" % (pid, _proc_start(pid) or "0"))


def _stop_helpers():
    """SIGTERM each helper recorded in PIDS (only if its start time still matches), wait up to
    2 s, then SIGKILL."""
    try:
        with open(PIDS) as f:
            rows = [line.split() for line in f if line.strip()]
    except OSError:
        rows = []
    live = []
    for row in rows:
        try:
            pid, start = int(row[0]), row[1]
        except (ValueError, IndexError):
            continue
        if _proc_start(pid) == start:
            try:
                os.kill(pid, signal.SIGTERM)
                live.append((pid, start))
            except OSError:
                pass
    deadline = time.monotonic() + 2.0
    while live and time.monotonic() < deadline:
        live = [(p, s) for p, s in live if _proc_start(p) == s and not _zombie(p)]
        time.sleep(0.02)
    for pid, start in live:
        if _proc_start(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        os.unlink(PIDS)
    except OSError:
        pass


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _spawn_helper(args):
    """Starts `faults.py ARGS` detached (own session); waits for its READY line."""
    log = open(os.path.join(RUN, "faults-helper.log"), "a")
    p = subprocess.Popen([PY, SELF] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=log, start_new_session=True)
    log.close()
    _record_helper(p.pid)
    r, _, _ = select.select([p.stdout], [], [], 10)
    line = p.stdout.readline().decode(errors="replace") if r else ""
    p.stdout.close()
    if not line.startswith("READY"):
        raise RuntimeError("fault helper %s did not start (see %s/faults-helper.log)" % (args[0], RUN))
    return p


# ------------------------------------------------------------------ faults --

def _base_table(rules, extra_chains=""):
    body = "\n".join("    " + r for r in rules)
    return ("table bridge %s {\n%s  chain faults {\n    type filter hook forward priority -200; policy accept;\n"
            "%s\n  }\n}\n" % (TABLE, extra_chains, body))


def _between(x, y):
    return 'iifname "%s" oifname "%s"' % (port(x), port(y))


def parse(spec):
    """SPEC -> (kind, args). Raises ValueError on a bad spec."""
    parts = spec.split(":")
    kind, args = parts[0], parts[1:]
    if kind == "none" and not args:
        return kind, {}
    if kind == "loss" and len(args) == 1:
        n = int(args[0])
        if not 0 <= n <= 100:
            raise ValueError("loss percentage out of 0..100")
        return kind, {"pct": n}
    if kind == "oneway" and len(args) == 1 and re.fullmatch(r"[ab]>[ab]", args[0]) and args[0][0] != args[0][2]:
        return kind, {"src": args[0][0], "dst": args[0][2]}
    if kind == "flap" and len(args) == 2:
        return kind, {"up": float(args[0]), "down": float(args[1])}
    if kind == "throttle" and len(args) == 1 and re.fullmatch(r"\d+(\.\d+)?[kmg]?bit", args[0]):
        return kind, {"rate": args[0]}
    if kind == "jitter" and len(args) in (2, 3) and (len(args) == 2 or args[2] == "udp"):
        return kind, {"delay_ms": float(args[0]), "jitter_ms": float(args[1]), "udp_only": len(args) == 3}
    if kind == "reorder-dup" and len(args) == 2:
        return kind, {"reorder_pct": float(args[0]), "dup_pct": float(args[1])}
    raise ValueError("bad fault spec %r (see faults.py --help)" % spec)


def describe(spec):
    kind, a = parse(spec)
    if kind == "none":
        return "no fault"
    if kind == "loss":
        return "%d%% random loss of every frame between the nodes, both ways (nftables numgen)" % a["pct"]
    if kind == "oneway":
        return "IPv4 from %s to %s dropped, %s to %s untouched (nftables)" % (a["src"], a["dst"], a["dst"], a["src"])
    if kind == "flap":
        return "link between the nodes %.3g s up, %.3g s down (nftables rule toggled)" % (a["up"], a["down"])
    if kind == "throttle":
        return "tbf %s toward each node (%s)" % (a["rate"], " ".join(TBF))
    if kind == "jitter":
        return "relay: %s delayed uniform %.3g..%.3g ms" % (
            "fast beats" if a["udp_only"] else "IPv4 between the nodes",
            max(0.0, a["delay_ms"] - a["jitter_ms"]), a["delay_ms"] + a["jitter_ms"])
    return "relay: %.3g%% of frames held %.0f ms (reordered), %.3g%% sent twice" % (
        a["reorder_pct"], REORDER_HOLD_MS, a["dup_pct"])


def apply(spec):
    """Clears any previous fault, then applies SPEC. Returns its description."""
    kind, a = parse(spec)
    clear()
    if kind == "none":
        return describe(spec)
    if kind == "loss":
        nft(_base_table(["%s numgen random mod 100 < %d counter drop" % (_between(x, other(x)), a["pct"])
                         for x in ("a", "b")]))
    elif kind == "oneway":
        nft(_base_table(["%s ether type ip counter drop" % _between(a["src"], a["dst"])]))
    elif kind == "flap":
        nft(_base_table(["jump flap"], "  chain flap {\n  }\n"))
        _spawn_helper(["_flap", str(a["up"]), str(a["down"])])
    elif kind == "throttle":
        for n in ("a", "b"):
            _run(["tc", "qdisc", "replace", "dev", port(n), "root", "tbf", "rate", a["rate"]] + TBF)
    else:
        helper = ["_relay"]
        if kind == "jitter":
            helper += ["--delay-ms", str(a["delay_ms"]), "--jitter-ms", str(a["jitter_ms"])]
            if a["udp_only"]:
                helper += ["--udp-only"]
        else:
            helper += ["--reorder-pct", str(a["reorder_pct"]), "--dup-pct", str(a["dup_pct"])]
        _spawn_helper(helper)
        match = "ether type ip" + (" udp dport %d" % BEAT_PORT if kind == "jitter" and a["udp_only"] else "")
        nft(_base_table(["%s %s counter drop" % (_between(x, other(x)), match) for x in ("a", "b")]))
    return describe(spec)


def clear():
    """Removes every fault: the nftables table, the tbf qdiscs, the helpers. Never raises."""
    errors = []
    try:
        if _table_exists():
            _run(["nft", "delete", "table", "bridge", TABLE], check=False)
    except (OSError, subprocess.SubprocessError) as e:
        errors.append(str(e))
    for n in ("a", "b"):
        try:
            r = _run(["tc", "qdisc", "show", "dev", port(n), "root"], check=False)
            if " tbf " in r.stdout:
                _run(["tc", "qdisc", "del", "dev", port(n), "root"], check=False)
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(str(e))
    _stop_helpers()
    try:
        os.unlink(RELAY_STATS)
    except OSError:
        pass
    return errors


def status():
    out = []
    r = _run(["nft", "list", "table", "bridge", TABLE], check=False)
    out.append(r.stdout.strip() if r.returncode == 0 else "no table bridge %s" % TABLE)
    for n in ("a", "b"):
        r = _run(["tc", "qdisc", "show", "dev", port(n), "root"], check=False)
        out.append("%s: %s" % (port(n), (r.stdout.strip() or r.stderr.strip())))
    try:
        with open(PIDS) as f:
            out.append("helpers: " + " ".join(line.split()[0] for line in f if line.strip()))
    except OSError:
        out.append("helpers: none")
    return "\n".join(out)


def counters():
    """What the fault in place has done so far: {"dropped": frames dropped by the table's
    rules, "tbf_dropped", "tbf_overlimits" (packets that had to wait), and the relay's figures (relayed, sent, dup, held, delay_ms_mean,
    late_ms_max)} when it runs."""
    out = {"dropped": 0, "tbf_dropped": 0, "tbf_overlimits": 0}
    r = _run(["nft", "list", "table", "bridge", TABLE], check=False)
    if r.returncode == 0:
        out["dropped"] = sum(int(n) for n in re.findall(r"counter packets (\d+)", r.stdout))
    for n in ("a", "b"):
        r = _run(["tc", "-s", "qdisc", "show", "dev", port(n), "root"], check=False)
        mm = re.search(r"tbf .*?dropped (\d+), overlimits (\d+)", r.stdout, re.S)
        if mm:
            out["tbf_dropped"] += int(mm.group(1))
            out["tbf_overlimits"] += int(mm.group(2))
    try:
        with open(RELAY_STATS) as f:
            out.update(json.load(f))
    except (OSError, ValueError):
        pass
    return out


@contextlib.contextmanager
def inject(spec):
    """with inject("loss:5") as desc: ... -- the fault is removed however the block ends."""
    try:
        yield apply(spec)
    finally:
        clear()


# ----------------------------------------------------------- helper: flap --

def run_flap(up, down):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rules = "\n".join("add rule bridge %s flap %s counter drop" % (TABLE, _between(x, other(x))) for x in ("a", "b"))
    print("READY", flush=True)
    t = time.monotonic()
    while not stop:
        t += up
        while not stop and time.monotonic() < t:
            time.sleep(min(0.05, max(0.0, t - time.monotonic())))
        if stop:
            break
        nft(rules)
        t += down
        while not stop and time.monotonic() < t:
            time.sleep(min(0.05, max(0.0, t - time.monotonic())))
        nft("flush chain bridge %s flap\n" % TABLE)
    return 0


# ---------------------------------------------------------- helper: relay --

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def run_relay(delay_ms, jitter_ms, reorder_pct, dup_pct, udp_only):
    """Reads IPv4 frames that one node sends to the other off the host-side veths, and writes
    them out of the other veth after the fault's delay. Until SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    except (OSError, AttributeError) as e:
        sys.stderr.write("relay: no real-time priority (%s)\n" % e)
    ip = {n: socket.inet_aton(MGMT_IP[n]) for n in ("a", "b")}
    socks = {}
    for n in ("a", "b"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((port(n), ETH_P_ALL))
        s.setblocking(False)
        socks[n] = s
    by_fd = {s.fileno(): n for n, s in socks.items()}
    heap = []  # (due, seq, node to write to, frame, time received)
    seq = 0
    rnd = random.Random()
    # relayed: frames taken; sent: frames written (copies included); delay_ms_mean: written -
    # received, as done; late_ms_max: how much later than due a frame was written
    stats = {"relayed": 0, "sent": 0, "dup": 0, "held": 0, "delay_ms_sum": 0.0, "late_ms_max": 0.0}
    t_stats = 0.0
    print("READY", flush=True)
    poller = select.poll()
    for s in socks.values():
        poller.register(s, select.POLLIN)
    while not stop:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            due, _, dst, frame, t_in = heapq.heappop(heap)
            try:
                socks[dst].send(frame)
                t = time.monotonic()
                stats["sent"] += 1
                stats["delay_ms_sum"] += (t - t_in) * 1000
                stats["late_ms_max"] = max(stats["late_ms_max"], (t - due) * 1000)
            except OSError:
                pass
        if now - t_stats > 0.5:
            t_stats = now
            _write_relay_stats(stats)
        timeout = 50 if not heap else max(0.0, (heap[0][0] - time.monotonic()) * 1000)
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        for fd, _ in events:
            src = by_fd[fd]
            s = socks[src]
            for _ in range(64):
                try:
                    frame, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if addr[2] == PACKET_OUTGOING or len(frame) < 34 or frame[12:14] != b"\x08\x00":
                    continue
                dst = other(src)
                if frame[26:30] != ip[src] or frame[30:34] != ip[dst]:
                    continue
                if udp_only:
                    ihl = (frame[14] & 0x0F) * 4
                    if frame[23] != 17 or len(frame) < 14 + ihl + 4 or \
                            struct.unpack_from("!H", frame, 14 + ihl + 2)[0] != BEAT_PORT:
                        continue
                stats["relayed"] += 1
                t = time.monotonic()
                if reorder_pct or dup_pct:
                    d = 0.0
                    if rnd.random() * 100 < reorder_pct:
                        d = REORDER_HOLD_MS
                        stats["held"] += 1
                    if rnd.random() * 100 < dup_pct:
                        seq += 1
                        heapq.heappush(heap, (t + (d + DUP_AFTER_MS) / 1000.0, seq, dst, frame, t))
                        stats["dup"] += 1
                else:
                    d = max(0.0, rnd.uniform(delay_ms - jitter_ms, delay_ms + jitter_ms))
                seq += 1
                heapq.heappush(heap, (t + d / 1000.0, seq, dst, frame, t))
    _write_relay_stats(stats)
    sys.stderr.write("relay: %s\n" % stats)
    return 0


def _write_relay_stats(stats):
    out = {k: v for k, v in stats.items() if k != "delay_ms_sum"}
    out["delay_ms_mean"] = round(stats["delay_ms_sum"] / stats["sent"], 3) if stats["sent"] else None
    out["late_ms_max"] = round(stats["late_ms_max"], 3)
    tmp = RELAY_STATS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, RELAY_STATS)


# -------------------------------------------------------------------- main --

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("apply")
    p.add_argument("spec")
    p.add_argument("--seconds", type=float, default=None)
    sub.add_parser("clear")
    sub.add_parser("status")
    p = sub.add_parser("_flap")
    p.add_argument("up", type=float)
    p.add_argument("down", type=float)
    p = sub.add_parser("_relay")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--reorder-pct", type=float, default=0.0)
    p.add_argument("--dup-pct", type=float, default=0.0)
    p.add_argument("--udp-only", action="store_true")
    a = ap.parse_args()
    if a.cmd == "apply":
        print(apply(a.spec))
        if a.seconds is not None:
            try:
                time.sleep(a.seconds)
            finally:
                clear()
        return 0
    if a.cmd == "clear":
        errs = clear()
        for e in errs:
            sys.stderr.write("faults: %s\n" % e)
        return 0
    if a.cmd == "status":
        print(status())
        return 0
    if a.cmd == "_flap":
        return run_flap(a.up, a.down)
    return run_relay(a.delay_ms, a.jitter_ms, a.reorder_pct, a.dup_pct, a.udp_only)


if __name__ == "__main__":
    sys.exit(main())
