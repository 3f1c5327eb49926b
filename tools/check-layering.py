#!/usr/bin/env python3
"""The layering rule, checked on every #include "..." of the tree's C++ files.

Layers, bottom up; a file may include its own layer and those its layer is allowed to see:

  common      Status, clocks, atomic files, digests, spawning, logging; nothing of ftpair
  proto       the .proto library and proto/rpc (gRPC helpers)         -> common
  dataplane   EAL, ports, agent, the NAT; no gRPC, no checkpoints, no roles -> common
  checkpoint  engine, applier, codec, snapshots                       -> common, proto, dataplane
  failover    beats, role policy, fencing and event-source interfaces -> common, proto, dataplane
  virt        the platform (libvirt, fencers, events) and ftpair-virt -> common, proto, failover
  control     the daemon: wires everything                            -> all of the above
  tools       ftpairctl and the lab tools talk to the daemon over its public interfaces only
              (gRPC, /metrics, files)                                  -> common, proto
  tools/bench benchmark harnesses may link what they measure          -> common, proto, dataplane, checkpoint

Tests mirror the sources: tests/unit/<layer>/ may include what <layer> may, plus the test
helpers beside them; tests/virt/ is virt's. fuzz/ targets are harnesses of any layer below
control's daemon (they may include control/config.h to fuzz the config parser).

Generated protobuf headers ("x.pb.h", "x.grpc.pb.h") belong to proto.
Exit 0 when every include points down, 1 with one line per upward include otherwise.
Usage: check-layering.py [SOURCE_ROOT]
"""
import os
import re
import sys

BELOW = {
    "common": set(),
    "proto": {"common"},
    "dataplane": {"common"},
    "checkpoint": {"common", "proto", "dataplane"},
    "failover": {"common", "proto", "dataplane"},
    "virt": {"common", "proto", "failover"},
    "control": {"common", "proto", "dataplane", "checkpoint", "failover", "virt"},
    "tools": {"common", "proto"},
    "tools/bench": {"common", "proto", "dataplane", "checkpoint"},
    "fuzz": {"common", "proto", "dataplane", "checkpoint", "failover", "virt", "control"},
}
SOURCE_EXT = (".cc", ".h", ".cpp", ".hpp", ".c")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SKIP_DIRS = {".git", "build", "node_modules"}


def layer_of_file(rel):
    parts = rel.split("/")
    if parts[0] == "tests" and len(parts) > 2 and parts[1] == "unit":
        return parts[2], "tests/unit/" + parts[2]
    if parts[0] == "tests" and len(parts) > 1 and parts[1] == "virt":
        return "virt", "tests/virt"
    if parts[0] == "tests":
        return "tests", "tests"
    if parts[0] == "tools" and len(parts) > 1 and parts[1] == "bench":
        return "tools/bench", "tools/bench"
    return parts[0], parts[0]


def layer_of_include(inc):
    base = os.path.basename(inc)
    if base.endswith(".pb.h"):
        return "proto"
    first = inc.split("/")[0]
    if first in BELOW or first == "tools":
        return first
    return None  # a system or third-party header in quotes, or a file beside the includer


def check(root):
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith("build")]
        for fn in filenames:
            if not fn.endswith(SOURCE_EXT):
                continue
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, root)
            layer, home = layer_of_file(rel)
            if layer not in BELOW:
                continue  # tests/unit/eal_main.cc and other shared test mains
            allowed = BELOW[layer] | {layer}
            with open(path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    inc = m.group(1)
                    target = layer_of_include(inc)
                    if target is None or target in allowed:
                        continue
                    if target == "tools" and layer.startswith("tools"):
                        continue
                    bad.append("%s:%d includes %s (layer %s): %s may include only %s" % (
                        rel, lineno, inc, target, home, ", ".join(sorted(allowed))))
    return bad


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    bad = check(root)
    for b in bad:
        print("layering: " + b)
    if bad:
        print("layering: %d upward include(s); see tools/check-layering.py for the rule" % len(bad))
        return 1
    print("layering: every include points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
