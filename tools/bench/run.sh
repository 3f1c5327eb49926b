#!/usr/bin/env bash
# Runs the benchmark groups and writes JSON lines to BUILD_DIR/bench/results.jsonl.
#
#   tools/bench/run.sh BUILD_DIR [ONLY]      (make bench [ONLY=group])
#
# Builds nothing: `make bench` has built BUILD_DIR already. Each group is a function
# group_<name>; ONLY runs one of them and appends its lines (a full run starts the file afresh).
# Every line is {"name","value","unit","params"}.
set -euo pipefail

build=${1:?usage: run.sh BUILD_DIR [ONLY]}
only=${2:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$build" && pwd)
out=$build/bench
results=$out/results.jsonl
mkdir -p "$out"
# A full run starts the file afresh; ONLY=group appends, so groups can be run one by one.
[ -n "$only" ] || : >"$results"
: >>"$results"  # ONLY in a fresh build directory: the file exists before a group counts its lines

PY=/usr/bin/python3
# Shared machine, no hugepages: every DPDK process gets its own file prefix.
EAL_BASE=(--no-huge --no-pci --no-shconf --no-telemetry --log-level=warning)

log() { printf '[bench] %s\n' "$*" >&2; }

# Removes the EAL runtime directory a finished DPDK process left behind for its prefix.
rundir_cleanup() {
  rm -rf "/var/run/dpdk/$1" "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk/$1" 2>/dev/null || true
}

# emit NAME VALUE UNIT [PARAMS_JSON]
emit() {
  local params=${4:-'{}'}
  printf '{"name": "%s", "value": %s, "unit": "%s", "params": %s}\n' "$1" "$2" "$3" "$params" \
    >>"$results"
}

# ------------------------------------------------------------------ dataplane (issue 2)

NF_BENCH=$build/tools/bench/nf_bench
GRPC_RTT=$build/tools/bench/grpc_rtt
TESTPMD=${TESTPMD:-/usr/bin/dpdk-testpmd}
DP_FLOWS=${DP_FLOWS:-"1000 100000 1000000"}
DP_PROTOS=${DP_PROTOS:-"udp tcp"}
DP_SECONDS=${DP_SECONDS:-5}          # measured 1-second windows per NF run
TESTPMD_SECONDS=${TESTPMD_SECONDS:-8}
CALLGRIND_FLOWS=${CALLGRIND_FLOWS:-100000}
DP_SCALE_FLOWS=${DP_SCALE_FLOWS:-100000}
DP_SCALE_ROUNDS=${DP_SCALE_ROUNDS:-5}
DP_MEM_FLOWS=${DP_MEM_FLOWS:-1000000}
CALLGRIND_PACKETS=${CALLGRIND_PACKETS:-200000}
CALLGRIND_TESTPMD_SECONDS=${CALLGRIND_TESTPMD_SECONDS:-20}

# testpmd io forwarding, one forwarding core, two net_null ports (RX generates 64-byte
# packets, TX frees them). Prints the log path.
run_testpmd() {
  local tag=$1 logf=$out/testpmd-$1.log
  # Not interactive: testpmd forwards from the start and prints port statistics every
  # second; SIGINT after TESTPMD_SECONDS makes it stop and exit cleanly.
  timeout -s INT -k 5 "$TESTPMD_SECONDS" stdbuf -oL "$TESTPMD" "${EAL_BASE[@]}" -m 1024 \
    --file-prefix "ftpb_tp_$$_$tag" -l 0,1 --vdev net_null0 --vdev net_null1 -- \
    --forward-mode=io --nb-cores=1 --total-num-mbufs=16384 --stats-period 1 \
    >"$logf" 2>&1 </dev/null || true
  rundir_cleanup "ftpb_tp_$$_$tag"
  echo "$logf"
}

# Parses testpmd logs: per stats period, the sum over ports of Tx-pps is what the one
# forwarding core forwarded. Skips the first period (no rate yet) and idle ones.
# Prints "median_total median_per_port periods".
parse_testpmd() {
  "$PY" - "$@" <<'PY'
import re, statistics, sys
totals, per_port = [], []
for path in sys.argv[1:]:
    periods, cur, port = [], {}, None
    for line in open(path, errors="replace"):
        m = re.search(r"NIC statistics for port (\d+)", line)
        if m:
            port = int(m.group(1))
            if port in cur:
                periods.append(cur)
                cur = {}
            continue
        m = re.search(r"Tx-pps:\s+(\d+)", line)
        if m and port is not None:
            cur[port] = int(m.group(1))
    if cur:
        periods.append(cur)
    for p in periods[1:]:
        if len(p) == 2 and all(v > 0 for v in p.values()):
            totals.append(sum(p.values()) / 1e6)
            per_port.extend(v / 1e6 for v in p.values())
if not totals:
    print("0 0 0")
else:
    print(f"{statistics.median(totals):.4f} {statistics.median(per_port):.4f} {len(totals)}")
PY
}

# NF: the worker loop only (worker_iteration), synchronous mode, UDP.
# testpmd: the forwarding lcore's thread (--separate-threads), divided by the packets it sent.
callgrind_dataplane() {
  local cg=$out/callgrind.nf.out ir_nf="" ir_tp="" tp_pkts f
  log "dataplane: callgrind, nf_bench $CALLGRIND_FLOWS udp flows, $CALLGRIND_PACKETS packets"
  if valgrind --tool=callgrind --toggle-collect='*worker_iteration*' --callgrind-out-file="$cg" \
    "$NF_BENCH" "${EAL_BASE[@]}" -m 1024 --file-prefix "ftpb_cg_$$" -l 0 -- \
    --flows "$CALLGRIND_FLOWS" --proto udp --no-generator --packets "$CALLGRIND_PACKETS" \
    >"$out/callgrind.nf.stdout" 2>"$out/callgrind.nf.log"; then
    ir_nf=$(awk '/^totals:/ {print $2; exit}' "$cg")
    callgrind_annotate --inclusive=no "$cg" >"$out/callgrind.nf.txt" 2>/dev/null || true
  else
    log "callgrind nf_bench run failed; see $out/callgrind.nf.log"
  fi
  rundir_cleanup "ftpb_cg_$$"
  # The same with dataplane beats every 1 ms (issue 19). Under callgrind the loop runs ~50x
  # slower while the TSC does not, so a beat falls due ~50x more often per packet than
  # natively: an upper bound on their cost.
  local cgb=$out/callgrind.nf_beats.out ir_nfb=""
  if valgrind --tool=callgrind --toggle-collect='*worker_iteration*' --callgrind-out-file="$cgb" \
    "$NF_BENCH" "${EAL_BASE[@]}" -m 1024 --file-prefix "ftpb_cgb_$$" -l 0 -- \
    --flows "$CALLGRIND_FLOWS" --proto udp --no-generator --packets "$CALLGRIND_PACKETS" --dp-beats-us 1000 \
    >"$out/callgrind.nf_beats.stdout" 2>"$out/callgrind.nf_beats.log"; then
    ir_nfb=$(awk '/^totals:/ {print $2; exit}' "$cgb")
  else
    log "callgrind nf_bench run with dataplane beats failed; see $out/callgrind.nf_beats.log"
  fi
  rundir_cleanup "ftpb_cgb_$$"
  if [ -n "$ir_nfb" ]; then
    local ipp_b
    ipp_b=$("$PY" -c "print(round($ir_nfb / $CALLGRIND_PACKETS, 1))")
    emit nf_instructions_per_packet "$ipp_b" instructions \
      "{\"flows\": $CALLGRIND_FLOWS, \"proto\": \"udp\", \"dp_beats_us\": 1000}"
    log "dataplane: nf $ipp_b instructions/packet with dataplane beats every 1 ms"
  fi
  log "dataplane: callgrind, testpmd io forwarding for ${CALLGRIND_TESTPMD_SECONDS}s"
  rm -f "$out"/callgrind.testpmd.out*
  timeout -s INT -k 60 "$CALLGRIND_TESTPMD_SECONDS" valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$out/callgrind.testpmd.out" "$TESTPMD" "${EAL_BASE[@]}" -m 1024 \
    --file-prefix "ftpb_tpcg_$$" -l 0,1 --vdev net_null0 --vdev net_null1 -- \
    --forward-mode=io --nb-cores=1 --total-num-mbufs=16384 --stats-period 5 \
    >"$out/callgrind.testpmd.log" 2>&1 </dev/null || true
  rundir_cleanup "ftpb_tpcg_$$"
  # The forwarding lcore is the thread with the most instructions; its packets are the
  # accumulated TX-packets of the run.
  for f in "$out"/callgrind.testpmd.out-*; do
    [ -f "$f" ] || continue
    local t
    t=$(awk '/^totals:/ {print $2; exit}' "$f")
    if [ -n "$t" ] && { [ -z "$ir_tp" ] || [ "$t" -gt "$ir_tp" ]; }; then ir_tp=$t; fi
  done
  tp_pkts=$(awk '/Accumulated forward statistics/ {acc=1} acc && /TX-packets:/ {print $2; exit}' \
    "$out/callgrind.testpmd.log")
  local params="{\"flows\": $CALLGRIND_FLOWS, \"proto\": \"udp\"}" nf_ipp="" tp_ipp=""
  if [ -n "$ir_nf" ]; then
    nf_ipp=$("$PY" -c "print(round($ir_nf / $CALLGRIND_PACKETS, 1))")
    emit nf_instructions_per_packet "$nf_ipp" instructions "$params"
    log "dataplane: nf $nf_ipp instructions/packet; profile in $out/callgrind.nf.txt"
  fi
  if [ -n "$ir_tp" ] && [ -n "$tp_pkts" ] && [ "$tp_pkts" -gt 0 ]; then
    tp_ipp=$("$PY" -c "print(round($ir_tp / $tp_pkts, 1))")
    emit testpmd_io_instructions_per_packet "$tp_ipp" instructions '{"ports": 2, "cores": 1}'
    log "dataplane: testpmd io $tp_ipp instructions/packet ($tp_pkts packets)"
  else
    log "callgrind testpmd run gave no figure; see $out/callgrind.testpmd.log"
  fi
  if [ -n "$nf_ipp" ] && [ -n "$tp_ipp" ]; then
    # testpmd's instructions per packet over the NF's: the throughput ratio at equal IPC.
    emit nf_vs_testpmd_instruction_ratio "$("$PY" -c "print(round($tp_ipp / $nf_ipp, 4))")" ratio \
      "$params"
  fi
}

group_dataplane() {
  [ -x "$NF_BENCH" ] || { log "missing $NF_BENCH (benchmarks disabled?)"; return 1; }
  [ -x "$TESTPMD" ] || { log "missing $TESTPMD"; return 1; }
  local t0=$SECONDS tp_logs=() f p
  # The lines before this run's (ONLY=dataplane appends to an earlier run's): the ratios
  # below are of this run's rates only.
  local first_line
  first_line=$(($(wc -l <"$results") + 1))

  log "dataplane: testpmd io forwarding (before the NF runs)"
  tp_logs+=("$(run_testpmd before)")

  for f in $DP_FLOWS; do
    for p in $DP_PROTOS; do
      # 1M flows need ~0.5 GB of hash and records; give every run the same memory.
      log "dataplane: nf_bench $f $p flows"
      local rc=0
      "$NF_BENCH" "${EAL_BASE[@]}" -m 2048 --file-prefix "ftpb_nf_$$_${f}_$p" -l 0,1 -- \
        --flows "$f" --proto "$p" --seconds "$DP_SECONDS" \
        >>"$results" 2>"$out/nf_bench-$f-$p.log" || rc=$?
      rundir_cleanup "ftpb_nf_$$_${f}_$p"
      if [ "$rc" != 0 ]; then
        log "nf_bench failed:"; cat "$out/nf_bench-$f-$p.log" >&2; return 1
      fi
      grep -E '^(warm-up|generator|nf|sync|WARNING)' "$out/nf_bench-$f-$p.log" | sed 's/^/  /' >&2
    done
  done

  log "dataplane: testpmd io forwarding (after the NF runs)"
  tp_logs+=("$(run_testpmd after)")
  local tp
  tp=$(parse_testpmd "${tp_logs[@]}")
  read -r tp_total tp_port tp_periods <<<"$tp"
  log "dataplane: testpmd io: ${tp_total} Mpps per core, ${tp_port} Mpps per port ($tp_periods periods)"
  if [ "$tp_periods" = 0 ]; then log "testpmd produced no statistics; see $out/testpmd-*.log"; return 1; fi
  emit testpmd_io_mpps "$tp_total" Mpps '{"ports": 2, "cores": 1}'
  emit testpmd_io_mpps_per_port "$tp_port" Mpps '{"ports": 2, "cores": 1}'

  # Headline figures: nf_mpps {"flows": N} is the UDP run; ratios for every run.
  "$PY" - "$results" "$tp_total" "$first_line" <<'PY'
import json, sys
path, tp, first = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(l) for i, l in enumerate(open(path), 1) if i >= first and l.strip()]
out = []
# The extra figures (one core: inline, sync; the NIC-like feed on two) get their own ratios
# against the same testpmd median.
extra = {"nf_inline_mpps": "nf_inline_vs_testpmd_ratio", "nf_sync_mpps": "nf_sync_vs_testpmd_ratio",
         "nf_dma_fed_mpps": "nf_dma_fed_vs_testpmd_ratio"}
for r in rows:
    if r["name"] in extra and tp:
        out.append({"name": extra[r["name"]], "value": round(r["value"] / tp, 4), "unit": "ratio",
                    "params": r["params"]})
    if r["name"] != "nf_mpps" or "proto" not in r["params"]:
        continue
    f, proto = r["params"]["flows"], r["params"]["proto"]
    ratio = r["value"] / tp if tp else 0
    out.append({"name": "nf_vs_testpmd_ratio", "value": round(ratio, 4), "unit": "ratio",
                "params": {"flows": f, "proto": proto}})
    if proto == "udp":
        out.append({"name": "nf_mpps", "value": r["value"], "unit": "Mpps", "params": {"flows": f}})
        out.append({"name": "nf_vs_testpmd_ratio", "value": round(ratio, 4), "unit": "ratio",
                    "params": {"flows": f}})
with open(path, "a") as fh:
    for o in out:
        fh.write(json.dumps(o) + "\n")
PY

  # Many workers (issue 17): 1 and 2 workers in each round, on two lcores.
  local NF_SCALE=$build/tools/bench/nf_scale rc=0
  log "dataplane: nf_scale, 1 and 2 workers, $DP_SCALE_FLOWS udp flows, $DP_SCALE_ROUNDS rounds"
  "$NF_SCALE" "${EAL_BASE[@]}" -m 1024 --file-prefix "ftpb_sc_$$" -l 0,1 -- \
    --workers 2 --flows "$DP_SCALE_FLOWS" --rounds "$DP_SCALE_ROUNDS" \
    >>"$results" 2>"$out/nf_scale.log" || rc=$?
  rundir_cleanup "ftpb_sc_$$"
  if [ "$rc" != 0 ]; then log "nf_scale failed:"; cat "$out/nf_scale.log" >&2; return 1; fi
  sed 's/^/  /' "$out/nf_scale.log" | grep -v '^  EAL' >&2
  # Bytes per flow: one worker's dataplane at DP_MEM_FLOWS flows over the same at 1k.
  log "dataplane: nf_scale --memory $DP_MEM_FLOWS"
  "$NF_SCALE" "${EAL_BASE[@]}" -m 3072 --file-prefix "ftpb_sm_$$" -l 0,1 -- --memory "$DP_MEM_FLOWS" \
    >>"$results" 2>"$out/nf_memory.log" || rc=$?
  rundir_cleanup "ftpb_sm_$$"
  if [ "$rc" != 0 ]; then log "nf_scale --memory failed:"; cat "$out/nf_memory.log" >&2; return 1; fi
  grep -v '^EAL' "$out/nf_memory.log" | sed 's/^/  /' >&2

  # Instructions per packet under callgrind: independent of the load on this shared machine.
  if command -v valgrind >/dev/null && [ "${DP_CALLGRIND:-1}" = 1 ]; then
    callgrind_dataplane
  fi
  log "dataplane: done in $((SECONDS - t0)) s"
}


# ------------------------------------------------------------------ checkpoint (issue 3)

CK_FLOWS=${CK_FLOWS:-"10000 100000 1000000"}
CK_ROUNDS=${CK_ROUNDS:-3}
CK_SECONDS=${CK_SECONDS:-4}            # measured 1-second windows per phase
CK_CHURN_EVERY=${CK_CHURN_EVERY:-500}  # 1 in N packets opens a new flow
CK_INTERVAL_US=${CK_INTERVAL_US:-1000} # 1,000 checkpoints per second
# Churn flows expire after this; shorter than the time the 180k churn keys take to wrap
# (4.5 s at 20 Mpps, 40k new flows a second), so every interval keeps opening new flows. (At
# 6 s a 100k run at 19 Mpps wrapped them: no new flows, no checkpoints; nf_bench now stops.)
CK_UDP_TIMEOUT=${CK_UDP_TIMEOUT:-4}
# The saturated runs: the generator takes one CPU flat out and the worker the other, so the
# commit path's threads share the generator's. Real-time there starves the packet source (the
# NF's rate falls with it, not because of it): these runs keep the commit path at normal
# priority. The nf_idle run below measures the commit path with its real-time threads.
CK_REALTIME=${CK_REALTIME:-off}
# The replication-only runs (params load=nf_idle): CK_IDLE_FLOWS flows, relaxed and strict,
# the generator paced at CK_IDLE_PPS with 1 in CK_IDLE_CHURN packets opening a flow (1,000
# held packets a second), sleeping between bursts, so the commit path has a CPU of its own.
CK_IDLE_PPS=${CK_IDLE_PPS:-100000}
CK_IDLE_CHURN=${CK_IDLE_CHURN:-100}
CK_IDLE_FLOWS=${CK_IDLE_FLOWS:-"10000 1000000"}
# Their UDP timeout: longer than the paced generator takes to come back to a flow (10 s for
# 1M flows at 100,000 pps), or the base flows themselves expire and the run measures a table
# emptying (at 4 s, 1M fell to 450k: 180,000 records a second and 13 us pauses); short enough
# that the churn's live flows (1,000 a second) fit the NAT ports 1M flows leave free (at 60 s
# and 2,000 a second they ran out after 20,000).
CK_IDLE_UDP_TIMEOUT=${CK_IDLE_UDP_TIMEOUT:-15}
CK_RTT_TRIPS=${CK_RTT_TRIPS:-20000}

# nf_bench --replication: per flow count, rounds of off/relaxed/strict phases in one process
# (ratios within a round), a real engine replicating to a loopback Sync server.
# One nf_bench --replication run named NAME (its prefix and log), the rest of the arguments
# after `--`: its lines appended to the results, its log's lines matching PATTERN shown.
ck_nf_bench() {
  local name=$1 pattern=$2 rc=0
  shift 2
  "$NF_BENCH" "${EAL_BASE[@]}" -m 3072 --file-prefix "ftpb_ck_$$_$name" -l 0,1 -- "$@" \
    --ckpt-interval-us "$CK_INTERVAL_US" --rounds "$CK_ROUNDS" --seconds "$CK_SECONDS" \
    --gen-seconds 0 --inline-seconds 0 --sync-packets 0 \
    >"$out/ckpt-$name.jsonl" 2>"$out/ckpt-$name.log" || rc=$?
  rundir_cleanup "ftpb_ck_$$_$name"
  if [ "$rc" != 0 ]; then
    log "nf_bench --replication ($name) failed:"; cat "$out/ckpt-$name.log" >&2; return 1
  fi
  cat "$out/ckpt-$name.jsonl" >>"$results"
  grep -E "$pattern" "$out/ckpt-$name.log" | sed 's/^/  /' >&2
}

group_checkpoint() {
  local t0=$SECONDS f
  for f in $CK_FLOWS; do
    log "checkpoint: nf_bench --replication off,relaxed,strict, $f flows"
    ck_nf_bench "$f" 'round|overhead|full sync' --flows "$f" --replication off,relaxed,strict \
      --churn-every "$CK_CHURN_EVERY" --udp-timeout "$CK_UDP_TIMEOUT" --realtime "$CK_REALTIME" || return 1
  done
  # The replication-only figures: the NF idle (the generator paced), the commit path at
  # real-time priority, so that the pause and the commit are measured apart from the
  # worker's and the generator's competition for this machine's two CPUs.
  for f in $CK_IDLE_FLOWS; do
    log "checkpoint: nf_bench --replication relaxed,strict, $f flows, NF idle (generator paced at $CK_IDLE_PPS pps), real-time commit path"
    ck_nf_bench "idle-$f" 'round|full sync' --flows "$f" --replication relaxed,strict --gen-pps "$CK_IDLE_PPS" \
      --churn-every "$CK_IDLE_CHURN" --udp-timeout "$CK_IDLE_UDP_TIMEOUT" --realtime on || return 1
  done
  # The floor under strict mode's ack: gRPC's own round trip on a loopback Sync stream, by
  # how the stream is driven (synchronous API, asynchronous with blocking or polling queues).
  log "checkpoint: grpc_rtt, $CK_RTT_TRIPS round trips per way of driving the stream"
  "$GRPC_RTT" "$CK_RTT_TRIPS" >"$out/grpc-rtt.jsonl" 2>"$out/grpc-rtt.log" || {
    log "grpc_rtt failed:"; cat "$out/grpc-rtt.log" >&2; return 1; }
  cat "$out/grpc-rtt.jsonl" >>"$results"
  sed 's/^/  /' "$out/grpc-rtt.log" >&2
  # Headline names: pause percentiles over every replicated phase of a flow count (median of
  # the phases' p50/p99, max of maxima), strict latency likewise.
  "$PY" - "$results" "$CK_INTERVAL_US" "$CK_REALTIME" <<'PY'
import json, statistics, sys
path, interval, realtime = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]

def grouped(keep, key):
    """The values of the rows keep() takes, by key(row), in key order."""
    g = {}
    for r in rows:
        if keep(r):
            g.setdefault(key(r), []).append(r["value"])
    return sorted(g.items())

def load_of(r):
    return r["params"].get("load", "nf_saturated")

out = []
rate_hz = round(1e6 / interval)
headline = {"ckpt_phase_pause_us_p50": ("checkpoint_pause_us_p50", statistics.median, "us", 2),
            "ckpt_phase_pause_us_p99": ("checkpoint_pause_us_p99", statistics.median, "us", 2),
            "ckpt_phase_pause_us_max": ("checkpoint_pause_us_max", max, "us", 2),
            "ckpt_phase_rate_hz": ("checkpoint_rate_hz", statistics.median, "Hz", 1)}
# Saturated and NF-idle runs apart, each saying which.
for (name, flows, load), v in grouped(lambda r: r["name"] in headline and r["params"].get("mode") in ("relaxed", "strict"),
                                      lambda r: (r["name"], r["params"]["flows"], load_of(r))):
    new_name, agg, unit, digits = headline[name]
    out.append({"name": new_name, "value": round(agg(v), digits), "unit": unit,
                "params": {"flows": flows, "rate_hz": rate_hz, "load": load,
                           "realtime": "on" if load == "nf_idle" else realtime}})
# Strict latency: the saturated runs (every flow count) and the NF-idle run apart.
for (n, load), v in grouped(lambda r: r["name"] in ("ckpt_phase_strict_latency_us_p50",
                                                     "ckpt_phase_strict_latency_us_p99"),
                            lambda r: (r["name"], load_of(r))):
    out.append({"name": n.replace("ckpt_phase_strict_latency", "strict_added_latency"),
                "value": round(statistics.median(v), 2), "unit": "us",
                "params": {"packets": "held", "load": load,
                           "realtime": "on" if load == "nf_idle" else realtime}})
# The commit path stage by stage (strict epochs): median over rounds and flow counts.
for (n, load, stage), v in grouped(lambda r: r["name"] in ("ckpt_phase_stage_us_p50", "ckpt_phase_stage_us_p99",
                                                            "ckpt_phase_stage_us_mean"),
                                   lambda r: (r["name"], load_of(r), r["params"]["stage"])):
    out.append({"name": n.replace("ckpt_phase_stage", "commit_stage"), "value": round(statistics.median(v), 2),
                "unit": "us", "params": {"stage": stage, "mode": "strict", "load": load,
                                          "realtime": "on" if load == "nf_idle" else realtime}})
# Divergence: the most epochs (and ms) any flow count took, per kind of damage.
for (n, damage), v in grouped(lambda r: r["name"] in ("divergence_detect_epochs", "divergence_detect_ms")
                              and "capacity" in r["params"],
                              lambda r: (r["name"], r["params"]["damage"])):
    out.append({"name": n, "value": max(v), "unit": "epochs" if n.endswith("epochs") else "ms",
                "params": {"damage": damage, "of": "max over flow counts"}})
with open(path, "a") as fh:
    for o in out:
        fh.write(json.dumps(o) + "\n")
PY
  log "checkpoint: done in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------ failover (issue 4)

FO_TIMERS=${FO_TIMERS:-"5x8,3x8,dp,dp:1000:5:5000"}
FO_KILLS=${FO_KILLS:-10}
FO_STOPS=${FO_STOPS:-5}
FO_STALLS=${FO_STALLS:-5}
FO_TERMS=${FO_TERMS:-5}
FO_STEADY_S=${FO_STEADY_S:-60}
FO_DP_STEADY_S=${FO_DP_STEADY_S:-600}  # timers=dp: the issue's 600 s without a spurious failover

# The pair lab with constant-rate UDP: repeated kills/stalls of the active, a steady run per
# timer setting for spurious failovers (tools/bench/failover_bench.py).
group_failover() {
  local t0=$SECONDS rc=0
  log "failover: timers $FO_TIMERS, $FO_KILLS kills, $FO_STOPS stops, $FO_STALLS worker stalls, $FO_TERMS service stops, ${FO_STEADY_S}s steady"
  FTPAIRD=$build/control/ftpaird FTPAIRCTL=$build/tools/ftpairctl/ftpairctl \
    "$PY" "$root/tools/bench/failover_bench.py" --timers "$FO_TIMERS" --kills "$FO_KILLS" \
    --stops "$FO_STOPS" --stalls "$FO_STALLS" --terms "$FO_TERMS" --steady-s "$FO_STEADY_S" --dp-steady-s "$FO_DP_STEADY_S" \
    --out "$results" \
    >"$out/failover.log" 2>&1 || rc=$?
  grep -E '^\[|RESULT|steady|runs,|FAIL' "$out/failover.log" | tail -40 | sed 's/^/  /' >&2
  if [ "$rc" != 0 ]; then log "failover benchmark failed (see $out/failover.log)"; return 1; fi
  log "failover: done in $((SECONDS - t0)) s"
}

# In-service upgrade: the lab upgrade test (previous release -> this build, then a version
# that fails its health check and is rolled back), UP_RUNS times.
group_upgrade() {
  local t0=$SECONDS rc=0
  log "upgrade: ${UP_RUNS:-3} runs of tests/lab/test_upgrade.py"
  FTPAIRD=$build/control/ftpaird FTPAIRD_PREV=$build/control/ftpaird-prev FTPAIRCTL=$build/tools/ftpairctl/ftpairctl \
    "$PY" "$root/tools/bench/upgrade_bench.py" --runs "${UP_RUNS:-3}" --out "$results" >"$out/upgrade.log" 2>&1 || rc=$?
  grep -E '^\[run|RESULT|FAIL' "$out/upgrade.log" | tail -20 | sed 's/^/  /' >&2
  if [ "$rc" != 0 ]; then log "upgrade benchmark failed (see $out/upgrade.log)"; return 1; fi
  log "upgrade: done in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------ faults (issue 16)

FAULTS_SECONDS=${FAULTS_SECONDS:-60}
FAULTS_KILLS=${FAULTS_KILLS:-3}

# The management-network fault matrix: each fault of tools/lab/faults.py on the link between
# the nodes for FAULTS_SECONDS with echo connections (spurious failovers, two actives, no
# active, connections kept), then FAULTS_KILLS SIGKILLs of the active under it
# (tools/bench/faults_bench.py). FAULTS=spec,... picks faults.
group_faults() {
  local t0=$SECONDS rc=0
  log "faults: ${FAULTS:-every fault}, ${FAULTS_SECONDS}s each, $FAULTS_KILLS kills each"
  FTPAIRD=$build/control/ftpaird FTPAIRCTL=$build/tools/ftpairctl/ftpairctl \
    FAULTS_SECONDS=$FAULTS_SECONDS FAULTS_KILLS=$FAULTS_KILLS \
    "$PY" "$root/tools/bench/faults_bench.py" --out "$results" >"$out/faults.log" 2>&1 || rc=$?
  grep -E 'fault |window |kill |FAIL' "$out/faults.log" | tail -80 | sed 's/^/  /' >&2
  if [ "$rc" != 0 ]; then log "faults benchmark failed (see $out/faults.log)"; return 1; fi
  log "faults: done in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------ virt (issue 6)

group_virt() {
  local t0=$SECONDS
  log "virt: tools/bench-virt.sh ${VIRT_ROUNDS:-3} rounds (real libvirtd, TCG guests)"
  "$root/tools/bench-virt.sh" "$build" "${VIRT_ROUNDS:-3}" >>"$results" 2>"$out/virt.log" || {
    log "virt benchmark failed (see $out/virt.log)"
    return 1
  }
  # The VM pair with traffic (issue 20): four causes of failover, VM_RUNS each, then
  # VM_SPURIOUS_S seconds with no fault per timers setting (VM_TIMERS, heartbeat_ms x miss).
  log "virt: vm_pair_bench.py ${VM_RUNS:-5} runs per cause, ${VM_SPURIOUS_S:-300} s per timers (${VM_TIMERS:-50x10,100x30})"
  FTPAIR_VIRT="$build/virt/ftpair-virt" FTPAIR_COMMISSION="$build/virt/ftpair-commission" \
    FTPAIRCTL="$build/tools/ftpairctl/ftpairctl" FTPAIRD_GUEST="${FTPAIRD_GUEST:-$root/build-guest/control/ftpaird}" \
    "$PY" "$root/tests/virt/vm_pair_bench.py" --runs "${VM_RUNS:-5}" --spurious-s "${VM_SPURIOUS_S:-300}" \
    --timers "${VM_TIMERS:-50x10,100x30}" >>"$results" 2>"$out/vm_pair.log" || {
    log "vm pair benchmark failed (see $out/vm_pair.log)"
    return 1
  }
  grep -E '^run |spurious' "$out/vm_pair.log" | sed 's/^/  /' >&2
  log "virt: done in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------ main

groups=(dataplane checkpoint failover upgrade virt faults)
ran=0
for g in "${groups[@]}"; do
  if [ -z "$only" ] || [ "$only" = "$g" ]; then
    "group_$g"
    ran=1
  fi
done
if [ "$ran" = 0 ]; then
  log "unknown group '$only' (groups: ${groups[*]})"
  exit 2
fi
log "results: $results"
cat "$results"
