#!/usr/bin/python3
"""The NAT session log (control/ipfix.h) against a real collector: nfdump's nfcapd.

ipfix-send (tests/unit/control/ipfix_send.cc, the exporter as a program) exports known NAT44
mapping and session events to nfcapd on loopback, in two runs: the second continues the
first's sequence number, as a promoted standby would. nfdump must give back every event with
the same natEvent, protocol, addresses, ports and millisecond time, and nfcapd must count no
sequence failure. A third run that skips ahead proves the sequence check is live.

Environment: IPFIX_SEND = path of the ipfix-send binary. Exit 77 (skipped) without nfdump.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ipfix_collector  # noqa: E402

KINDS = {"mapping_create": 6, "session_create": 1, "session_delete": 2, "mapping_delete": 7}
T0 = 1_796_000_000_000  # ms; any wall time works, the collector keeps it


def make_events(flows):
    """Per flow: mapping create, session create, session delete, mapping delete."""
    out = []
    for i in range(flows):
        proto = (6, 17, 1)[i % 3]
        in_ip, nat_ip = "198.18.%d.%d" % (1 + i // 250, 1 + i % 250), "198.19.0.%d" % (1 + i % 4)
        in_port, nat_port = 1024 + 7 * i, 60000 - 3 * i
        ext_ip, ext_port = "198.19.%d.%d" % (128 + i % 8, 1 + i % 200), (443, 53, 0)[i % 3]
        if proto == 1:  # ICMP query: the "ports" are the query id, before and after NAT
            ext_port = 0
        t = T0 + 10 * i
        out.append(dict(nat_event=6, proto=proto, in_ip=in_ip, in_port=in_port, nat_ip=nat_ip,
                        nat_port=nat_port, ext_ip="0.0.0.0", ext_port=0, unix_ms=t))
        out.append(dict(nat_event=1, proto=proto, in_ip=in_ip, in_port=in_port, nat_ip=nat_ip,
                        nat_port=nat_port, ext_ip=ext_ip, ext_port=ext_port, unix_ms=t + 1))
        out.append(dict(nat_event=2, proto=proto, in_ip=in_ip, in_port=in_port, nat_ip=nat_ip,
                        nat_port=nat_port, ext_ip=ext_ip, ext_port=ext_port, unix_ms=t + 5))
        out.append(dict(nat_event=7, proto=proto, in_ip=in_ip, in_port=in_port, nat_ip=nat_ip,
                        nat_port=nat_port, ext_ip="0.0.0.0", ext_port=0, unix_ms=t + 6))
    return out


def send(binary, port, events, sequence, max_bytes=400):
    lines = "".join("%d %d %s %d %s %d %s %d %d\n" % (e["nat_event"], e["proto"], e["in_ip"], e["in_port"],
                                                      e["nat_ip"], e["nat_port"], e["ext_ip"], e["ext_port"],
                                                      e["unix_ms"]) for e in events)
    cmd = [binary, "--collector", "127.0.0.1:%d" % port, "--domain", "4242", "--max-bytes", str(max_bytes),
           "--flush-ms", "20", "--sequence", str(sequence)]
    out = subprocess.run(cmd, input=lines, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("%s exited %d: %s %s" % (" ".join(cmd), out.returncode, out.stdout, out.stderr))
    return json.loads(out.stdout.strip().splitlines()[-1])


class Checker:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print("ok   %s" % name)
        else:
            self.failed += 1
            print("FAIL %s %s" % (name, detail))


def main():
    binary = os.environ.get("IPFIX_SEND")
    if not binary or not os.path.exists(binary):
        print("IPFIX_SEND is not set to the ipfix-send binary")
        return 1
    if not ipfix_collector.available():
        print("skip: nfcapd/nfdump not installed (Debian package nfdump; tools/install-deps.sh)")
        return 77
    chk = Checker()
    events = make_events(60)  # 240 events, every kind, TCP, UDP and ICMP
    first, second = events[:100], events[100:]
    col = ipfix_collector.start()
    print("collector: %s" % " ".join(col.cmd))
    try:
        a = send(binary, col.port, first, 0)
        chk.check("first run exported all its events", a["records_exported"] == len(first) and a["send_errors"] == 0,
                  str(a))
        chk.check("first run packed records (<= 400-byte messages)",
                  len(first) * 22 // 400 < a["messages_sent"] < len(first), str(a))
        b = send(binary, col.port, second, a["sequence"])
        chk.check("second run continued the sequence", b["sequence"] == len(events), str(b))
        c = send(binary, col.port, [dict(events[0], unix_ms=T0 - 1)], b["sequence"] + 1000)
        chk.check("third run (sequence skipped ahead) exported", c["records_exported"] == 1, str(c))
    finally:
        got = col.stop(keep_dir=False)
    print("nfcapd said: %s" % " | ".join(l for l in col.log.splitlines() if "exporter" in l or "Sequence" in l))

    chk.check("collector decoded every event", len(got) == len(events) + 1, "%d of %d" % (len(got), len(events) + 1))
    by_time = {e["unix_ms"]: e for e in got}
    mismatches = []
    for e in events:
        g = by_time.get(e["unix_ms"])
        if e["proto"] == 1:  # nfdump stores no source port for ICMP (see ipfix_collector.py)
            e = dict(e, in_port=0)
        if g != e:
            mismatches.append((e, g))
    chk.check("natEvent, protocol, addresses, ports and time match for all %d events" % len(events),
              not mismatches, "first: sent %s, collector %s" % mismatches[0] if mismatches else "")
    chk.check("all four natEvent codes seen", sorted({g["nat_event"] for g in got}) == [1, 2, 6, 7])
    # Runs one and two are one stream to the collector: no failure. The third skipped 1000.
    chk.check("collector counted exactly the one deliberate sequence gap", col.stats.get("sequence_failures") == 1,
              str(col.stats))
    print("%d passed, %d failed" % (chk.passed, chk.failed))
    return 0 if chk.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
