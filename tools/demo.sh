#!/usr/bin/env bash
# make demo: bring up the pair lab, run real traffic through the active node with the
# standby replicating, and print what the two nodes saw. Cleans up on any exit.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
lab="$here/tools/lab/ftpair-lab"
ctl="$here/$build/tools/ftpairctl/ftpairctl"
py=/usr/bin/python3
traffic="$here/tools/lab/traffic.py"
export FTPAIRD="$here/$build/control/ftpaird"

plot_dir="$here/$build/demo"
plot="$plot_dir/failover-timeline.png"

if [ "$(id -u)" -ne 0 ]; then echo "demo: needs root (network namespaces)" >&2; exit 1; fi
sampler_pid=
cleanup() {
  if [ -n "$sampler_pid" ]; then touch "$plot_dir/failover-timeline.dat.stop"; wait "$sampler_pid" 2>/dev/null || true; fi
  "$lab" down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

# Timeline sampler: every 50 ms, both nodes' transmitted bytes and role from /metrics, until
# the stop file appears. Writes "unix_time a_mbps a_role b_mbps b_role" (role 1 active,
# 0 standby, -1 not answering) to $1.
sample_timeline() {  # data-file stop-file
  "$py" - "$1" "$2" <<'PYEOF'
import os, re, sys, time, urllib.request
out, stop = sys.argv[1], sys.argv[2]
op = urllib.request.build_opener(urllib.request.ProxyHandler({}))
url = {"a": "http://198.18.3.1:9108/metrics", "b": "http://198.18.3.2:9108/metrics"}
tx = re.compile(r'^ftpair_port_tx_bytes_total\{port="(inside|outside)"\} (\S+)', re.M)
act = re.compile(r'^ftpair_role\{state="ACTIVE"\} (\S+)', re.M)
def read(n):
    try:
        t = op.open(url[n], timeout=0.2).read().decode()
    except Exception:
        return None, -1
    m = act.search(t)
    return sum(float(v) for _, v in tx.findall(t)), (int(float(m.group(1))) if m else -1)
prev = {}
with open(out, "w") as f:
    while not os.path.exists(stop):
        now = time.time()  # wall clock: the kill time comes from the shell's clock
        row = ["%.3f" % now]
        for n in ("a", "b"):
            b, role = read(n)
            p = prev.get(n)
            rate = (b - p[1]) * 8 / 1e6 / (now - p[0]) if b is not None and p and now > p[0] and b >= p[1] else 0.0
            if b is not None:
                prev[n] = (now, b)
            row += ["%.2f" % rate, str(role)]
        f.write(" ".join(row) + "\n")
        f.flush()
        time.sleep(0.05)
PYEOF
}

# PNG: throughput (top) and role (bottom) per node, the kill marked by a dashed line.
plot_timeline() {  # data-file kill-unix-time png
  local first kill_s
  first=$(awk 'NR == 1 { print $1 }' "$1")
  kill_s=$(awk -v a="$first" -v b="$2" 'BEGIN { printf "%.2f", b - a }')
  set -- "$1" "$kill_s" "$3" "$first"
  gnuplot <<GPEOF
set terminal pngcairo size 1000,600 font ",10"
set output "$3"
set lmargin 12
set multiplot layout 2,1 title "ftpair failover: SIGKILL of the active (a) at t = $2 s"
set arrow from $2, graph 0 to $2, graph 1 nohead dashtype 2 lc rgb "red"
set ylabel "Mbit/s transmitted"
set key top right
set grid
plot "$1" using (\$1-$4):2 with lines lw 2 title "node a", "$1" using (\$1-$4):4 with lines lw 2 title "node b"
set ylabel "role"
set xlabel "seconds"
set yrange [-1.5:1.5]
set ytics ("down" -1, "standby" 0, "active" 1)
plot "$1" using (\$1-$4):(\$3+0.03) with steps lw 2 title "node a", "$1" using (\$1-$4):(\$5-0.03) with steps lw 2 title "node b"
unset multiplot
GPEOF
}

metric() {  # node name [label-match]
  curl -s "http://$( [ "$1" = a ] && echo 198.18.3.1 || echo 198.18.3.2 ):9108/metrics" |
    awk -v n="$2" -v l="${3:-}" '($1 == n || index($1, n "{") == 1) && index($1, l) && !done { print $2; done = 1 }'
}

echo "== pair lab up: client -- [ftpair-a active | ftpair-b standby] -- server"
"$lab" down --purge >/dev/null 2>&1 || true
"$lab" up >/dev/null
"$lab" start a --role active >/dev/null
"$lab" start b --role standby >/dev/null
for _ in $(seq 50); do [ "$(metric a ftpair_replication_in_sync)" = 1 ] && break; sleep 0.2; done
echo "   standby in sync: $(metric a ftpair_replication_in_sync)"

"$lab" exec server "$py" "$traffic" echo-server --port 7000 --udp >/dev/null 2>&1 &
"$lab" exec server iperf3 -s -1 >/dev/null 2>&1 &
sleep 1
echo "== traffic: iperf3 3 s + 32 long-lived TCP echo connections checking every byte"
"$lab" exec client "$py" "$traffic" echo-client --host 198.18.2.10 --port 7000 --conns 32 --seconds 8 --json \
  > /tmp/ftpair-demo-echo.json 2>/dev/null &
echo_pid=$!
sleep 1
"$lab" exec client iperf3 -c 198.18.2.10 -t 3 -J > /tmp/ftpair-demo-iperf.json 2>/dev/null || true
wait $echo_pid || true
mbps=$("$py" -c 'import json;d=json.load(open("/tmp/ftpair-demo-iperf.json"));print("%.0f"%(d["end"]["sum_received"]["bits_per_second"]/1e6))' 2>/dev/null || echo "?")
echo "   iperf3 through the NAT: ${mbps} Mbit/s"
echo "   echo connections: $(tail -1 /tmp/ftpair-demo-echo.json)"

if [ -x "$ctl" ]; then
  "$ctl" --addr 198.18.3.1:50051 checkpoint >/dev/null || true
  echo "== ftpairctl status (active)"
  "$ctl" --addr 198.18.3.1:50051 status || true
  echo "== ftpairctl status (standby)"
  "$ctl" --addr 198.18.3.2:50051 status || true
fi
echo "== what the nodes saw"
printf "   %-40s %12s %12s\n" metric a b
for mname in ftpair_flows ftpair_flows_created_total ftpair_checkpoints_total \
             ftpair_replication_records_sent_total ftpair_applied_records_total ftpair_sync_lag_epochs; do
  printf "   %-40s %12s %12s\n" "$mname" "$(metric a $mname)" "$(metric b $mname)"
done
printf "   %-40s %12s %12s\n" "forwarded LAN->WAN" "$(metric a ftpair_forwarded_packets_total inside)" \
  "$(metric b ftpair_forwarded_packets_total inside)"
printf "   %-40s %12s %12s\n" "checkpoint pauses (count)" "$(metric a ftpair_checkpoint_pause_seconds_count)" "-"
all_ok() {  # file: the echo client's JSON summary says every connection survived
  "$py" -c 'import json,sys;d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]);print(1 if d["ok"]==d["conns"] else 0)' "$1" 2>/dev/null || echo 0
}
[ "$(all_ok /tmp/ftpair-demo-echo.json)" = 1 ] || { echo "demo: a connection was lost" >&2; exit 1; }

echo "== failover: SIGKILL the active (a) under 16 long-lived connections and iperf3 (200 Mbit/s)"
mkdir -p "$plot_dir"
timeline="$plot_dir/failover-timeline.dat"
rm -f "$timeline.stop"
sample_timeline "$timeline" "$timeline.stop" &
sampler_pid=$!
"$lab" exec server iperf3 -s -1 >/dev/null 2>&1 &
lag=$(metric a ftpair_sync_lag_epochs)
"$lab" exec client "$py" "$traffic" echo-client --host 198.18.2.10 --port 7000 --conns 16 --seconds 8 --json \
  > /tmp/ftpair-demo-failover.json 2>/dev/null &
echo_pid=$!
sleep 0.5
"$lab" exec client iperf3 -c 198.18.2.10 -t 7 -b 200M -J > /tmp/ftpair-demo-iperf2.json 2>/dev/null &
iperf_pid=$!
sleep 2.5
dropped_before=$(metric b ftpair_forwarded_packets_total inside)
a_pid=$("$lab" pid a)
kill_at=$(date +%s.%N)
kill -KILL "$a_pid"  # directly, so kill_at is the moment (the lab script takes a while to start)
t0=$(date +%s%N)
for _ in $(seq 500); do [ "$(metric b ftpair_vip_owner)" = 1 ] && break; sleep 0.01; done
t1=$(date +%s%N)
wait $echo_pid || true
wait $iperf_pid || true
sleep 0.5
touch "$timeline.stop"
wait "$sampler_pid" || true
sampler_pid=
echo "   sync lag before the kill: ${lag} epochs"
echo "   b owns the virtual addresses after: $(( (t1 - t0) / 1000000 )) ms (polled; b's log has the exact time)"
grep -h "promoted" /run/ftpair-lab/b.log | tail -1 | sed 's/^/   /'
echo "   forwarded by b: ${dropped_before:-0} -> $(metric b ftpair_forwarded_packets_total inside) packets LAN->WAN"
echo "   connections: $(tail -1 /tmp/ftpair-demo-failover.json)"
if ! command -v gnuplot >/dev/null; then
  echo "   timeline plot: not written (gnuplot missing: apt-get install gnuplot-nox)"
elif plot_timeline "$timeline" "$kill_at" "$plot" 2>/tmp/ftpair-demo-gnuplot.err; then
  echo "   timeline plot (throughput and role per node): $plot"
else
  echo "   timeline plot: not written: $(head -c 300 /tmp/ftpair-demo-gnuplot.err)"
fi
[ "$(all_ok /tmp/ftpair-demo-failover.json)" = 1 ] || { echo "demo: a connection was lost in the failover" >&2; exit 1; }
echo "demo: all connections survived the failover"
