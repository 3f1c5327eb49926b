#!/usr/bin/env bash
# Runs the libFuzzer targets: tools/run-fuzz.sh BUILD_DIR SECONDS [target...]
#
# Each target runs for SECONDS on a COPY of fuzz/corpus/<target> (the repository's corpus
# never grows from CI; new inputs stay in BUILD_DIR/fuzz-work), starting with every seed
# and regression input in it. Any crash, sanitizer report, leak, timeout (-timeout) or
# memory blow-up (-rss_limit_mb) fails the run; the input that did it is kept in
# BUILD_DIR/fuzz-work/<target>/artifacts/. Prints executions per second and coverage
# (libFuzzer's final cov: and ft:) per target and a summary table, also written to
# BUILD_DIR/fuzz-results.txt. Without targets: every target. BUILD_DIR is set up with
# clang and ASan+UBSan if it has no build.ninja yet. Targets run FUZZ_JOBS at a time (default:
# one per CPU), each on one core for SECONDS.
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [target...]" >&2
  exit 2
fi
build=$1 secs=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
all_targets=(fuzz_packet fuzz_records fuzz_encoder fuzz_config fuzz_snapshot fuzz_smbios)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
case $secs in '' | *[!0-9]*) echo "run-fuzz: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;; esac

if [ ! -f "$build/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 meson setup "$build" "$root" -Dfuzz=true -Dtests=false -Dbenchmarks=false \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized || exit 1
fi
ninja -C "$build" -j2 $(printf 'fuzz/%s ' "${targets[@]}") || exit 1

# UBSan findings are fatal (by default it reports and goes on); leaks are on (ASan default).
# Suppressions: tools/sanitizers/ubsan.supp, each entry justified there.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=$root/tools/sanitizers/ubsan.supp}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
work=$build/fuzz-work
results=$build/fuzz-results.txt
# Targets run side by side, FUZZ_JOBS at a time (default: one per CPU): each libFuzzer run is
# one process on one core, so this takes SECONDS per round instead of SECONDS per target.
jobs=${FUZZ_JOBS:-$(nproc)}
case $jobs in '' | *[!0-9]* | 0) echo "run-fuzz: FUZZ_JOBS must be a whole number above 0, got '$jobs'" >&2; exit 2 ;; esac

# One target: its row of the table goes to $work/<target>/row, and the exit status says pass.
run_one() {
  local t=$1 bin=$build/fuzz/$1 seeds=$root/fuzz/corpus/$1
  local log=$work/$t/log
  local start rc took done_line execs eps cov ft rss corp result
  start=$(date +%s)
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" "$work/$t/corpus" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
  execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]+[0-9]+' "$log" | awk '{print $2}')
  eps=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]+[0-9]+' "$log" | awk '{print $2}')
  cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | awk '{print $2}')
  rss=$(grep -oE 'stat::peak_rss_mb:[[:space:]]+[0-9]+' "$log" | awk '{print $2}')
  corp=$(grep -oE 'corp: [0-9]+' <<<"$done_line" | awk '{print $2}')
  if [ $rc -eq 0 ] && [ -n "$done_line" ]; then
    result=ok
  else
    result="FAILED (exit $rc)"
    grep -E 'ERROR: |SUMMARY: |fuzz invariant failed|runtime error|Test unit written' "$log" | head -20 >&2
    echo "run-fuzz: $t failed; inputs in $work/$t/artifacts/, full log $log" >&2
  fi
  printf '%-14s %6s %10s %8s %6s %7s %6s %7s  %s\n' "$t" "$took" "${execs:--}" "${eps:--}" "${cov:--}" "${ft:--}" \
    "${corp:--}" "${rss:--}" "$result" | tee "$work/$t/row"
  [ "$result" = ok ]
}

printf '%-14s %6s %10s %8s %6s %7s %6s %7s  %s\n' target seconds execs exec/s cov ft corpus rss_mb result >"$results"
failed=0
pids=()
ran=()
# Stopped from outside (a CI timeout, Ctrl-C): the fuzzers stop too.
trap 'kill $(jobs -p) 2>/dev/null; exit 1' TERM INT
for t in "${targets[@]}"; do
  bin=$build/fuzz/$t
  seeds=$root/fuzz/corpus/$t
  if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
    echo "run-fuzz: no target $t (binary $bin, corpus $seeds)" >&2
    failed=1
    continue
  fi
  rm -rf "${work:?}/$t"
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp -r "$seeds/." "$work/$t/corpus/"
  # A free slot first: at most $jobs targets at once.
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "== $t: ${secs}s on a copy of $(ls "$seeds" | wc -l) corpus inputs (log: $work/$t/log)"
  run_one "$t" &
  pids+=($!)
  ran+=("$t")
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" 2>/dev/null
  # Pass or fail is read from the row (wait -n above may have reaped the run already); a run
  # that died before writing its row still gets one.
  grep -qE ' ok$' "$work/${ran[$i]}/row" 2>/dev/null || failed=1
  [ -s "$work/${ran[$i]}/row" ] || printf '%-14s %6s %10s %8s %6s %7s %6s %7s  %s\n' "${ran[$i]}" - - - - - - - \
    "FAILED (no result)" >"$work/${ran[$i]}/row"
  cat "$work/${ran[$i]}/row" >>"$results"
done
echo
cat "$results"
exit $failed
