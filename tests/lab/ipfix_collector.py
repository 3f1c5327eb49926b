"""A real IPFIX collector for the session-log tests: nfdump's nfcapd (Debian package nfdump).

nfcapd decodes RFC 8158's NAT fields (natEvent, postNATSourceIPv4Address,
postNAPTSourceTransportPort, observationTimeMilliseconds) into its files, and checks each
exporter's IPFIX sequence numbers; nfdump reads the files back as JSON.

    import ipfix_collector as C
    col = C.start()                        # nfcapd on 127.0.0.1:<free port>, files in a temp dir
    col = C.start(host="198.18.3.254")     # or bound to another local address (the lab's mgmt)
    ... export to f"127.0.0.1:{col.port}" ...
    events = col.stop()                    # [{"nat_event": 6, "proto": 17, "in_ip": ..., ...}]
    col.stats["sequence_failures"]         # from the file's statistics record

The commands it runs:
    nfcapd -w DIR -b HOST -p PORT -t 3600 -I ftpair            (HOST: 127.0.0.1 by default)
    TZ=UTC nfdump -r DIR/nfcapd.<stamp> -o json
    nfdump -r DIR/nfcapd.<stamp> -I
Each event dict: nat_event, proto, in_ip, in_port, nat_ip, nat_port, ext_ip, ext_port (the
destination; 0.0.0.0 and 0 for mapping events), unix_ms (observationTimeMilliseconds).
nfdump keeps no source port for ICMP (it stores the ICMP type/code in the destination port),
so in_port is 0 for ICMP events whatever was exported; the post-NAT port (the translated
query id) is kept.
"""

import calendar
import glob
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

NFCAPD = "nfcapd"
NFDUMP = "nfdump"
PROBE_DOMAIN = 0xFFFFFFF0  # observation domain of the readiness probe; never an event's


def available():
    """True when nfcapd and nfdump are installed (Debian package nfdump)."""
    return shutil.which(NFCAPD) is not None and shutil.which(NFDUMP) is not None


def _collector_env():
    """The environment for nfcapd and nfdump: times printed in UTC."""
    return dict(os.environ, TZ="UTC")


def _free_udp_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _udp_bound(port, host="127.0.0.1"):
    """True when some socket is bound to UDP host:port (read from /proc/net/udp, which
    prints the address as the hex of its bytes in host order: 127.0.0.1 is 0100007F)."""
    want = "%08X:%04X" % (struct.unpack("=I", socket.inet_aton(host))[0], port)
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in f.readlines()[1:])


def _unix_ms(stamp):
    """nfdump's "2026-12-02T13:34:18.537" (printed with TZ=UTC) -> ms since the epoch.
    nfdump 1.7.1 prints the milliseconds without zero padding ("...:18.5" is 5 ms), so the
    fraction is a count of milliseconds, not a decimal fraction."""
    whole, _, frac = stamp.partition(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000 + (int(frac) if frac else 0)


def _parse_json_stream(text):
    """nfdump's JSON: an array, or (with -q) objects separated by commas. An empty file
    prints "[\nNo matching flows\n]"."""
    text = text.strip()
    if not text or "No matching flows" in text:
        return []
    try:
        out = json.loads(text)
        return out if isinstance(out, list) else [out]
    except json.JSONDecodeError:
        pass
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        while i < len(text) and text[i] in "[],\n\t ":
            i += 1
        if i >= len(text):
            break
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out


def _event(rec):
    return {
        "nat_event": int(rec.get("nat_event_id", 0)),
        "proto": int(rec.get("proto", 0)),
        "in_ip": rec.get("src4_addr"),
        "in_port": int(rec.get("src_port", 0)),
        "nat_ip": rec.get("src4_xlt_ip"),
        "nat_port": int(rec.get("src_xlt_port", 0)),
        "ext_ip": rec.get("dst4_addr"),
        "ext_port": int(rec.get("dst_port", 0)),
        "unix_ms": _unix_ms(rec["t_event"]) if "t_event" in rec else None,
    }


class Collector:
    """One nfcapd process; start() makes it, stop() ends it and reads what it stored."""

    def __init__(self, port=None, workdir=None, ident="ftpair", host="127.0.0.1"):
        self.host = host
        self.port = port or _free_udp_port(host)
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="ftpair-nfcapd-")
        self.flowdir = os.path.join(self.dir, "flows")
        os.makedirs(self.flowdir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "nfcapd.log")
        self.cmd = [NFCAPD, "-w", self.flowdir, "-b", host, "-p", str(self.port), "-t", "3600", "-I", ident]
        self.proc = None
        self.stats = {}
        self.log = ""

    def start(self, timeout=10.0):
        """Starts nfcapd and returns once it is processing packets. Being bound is not enough
        (packets that arrive during its start-up can be lost), so it sends a header-only IPFIX
        message from PROBE_DOMAIN until nfcapd logs that exporter."""
        self._logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=_collector_env())
        probe = struct.pack("!HHIII", 10, 16, int(time.time()), 0, PROBE_DOMAIN)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("nfcapd exited with %s: %s" % (self.proc.returncode, self._read_log()))
                if _udp_bound(self.port, self.host):
                    if "Observation domain %d " % PROBE_DOMAIN in self._read_log():
                        return self
                    sock.sendto(probe, (self.host, self.port))
                time.sleep(0.1)
        finally:
            sock.close()
        self._kill()
        raise RuntimeError("nfcapd on %s:%d not ready within %.0f s: %s" % (self.host, self.port, timeout,
                                                                           self._read_log()))

    def _read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nfcapd closes its file and writes the stats
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None

    def stop(self, keep_dir=False):
        """Stops nfcapd (by its pid) and returns the events it decoded, in file order.
        Fills self.stats (flows, sequence_failures, ...) and self.log. Removes the temp dir
        unless keep_dir or the caller gave the directory."""
        self._kill()
        self.log = self._read_log()
        files = sorted(f for f in glob.glob(os.path.join(self.flowdir, "**", "nfcapd.*"), recursive=True)
                       if not os.path.basename(f).startswith("nfcapd.current"))
        events = []
        self.stats = {"files": len(files), "flows": 0, "sequence_failures": 0}
        for path in files:
            out = subprocess.run([NFDUMP, "-r", path, "-o", "json"], capture_output=True, text=True,
                                 env=_collector_env(), timeout=60)
            if out.returncode != 0:
                raise RuntimeError("nfdump -r %s -o json failed: %s" % (path, out.stderr))
            events += [_event(r) for r in _parse_json_stream(out.stdout)]
            info = subprocess.run([NFDUMP, "-r", path, "-I"], capture_output=True, text=True, env=_collector_env(),
                                  timeout=60)
            for line in info.stdout.splitlines():
                key, _, val = line.partition(":")
                if key.strip() == "Flows":
                    self.stats["flows"] += int(val)
                elif key.strip() == "Sequence failures":
                    self.stats["sequence_failures"] += int(val)
        if self._own_dir and not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return events


def start(port=None, workdir=None, host="127.0.0.1"):
    """Starts nfcapd on host (127.0.0.1 unless given; an IPv4 address of this namespace) and
    a free port unless given, storing into workdir (a new temp dir unless given). Returns the
    running Collector; raises RuntimeError if it fails."""
    return Collector(port=port, workdir=workdir, host=host).start()
