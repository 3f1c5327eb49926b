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

if [ "$(id -u)" -ne 0 ]; then echo "demo: needs root (network namespaces)" >&2; exit 1; fi
cleanup() { "$lab" down >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

metric() {  # node name [label-match]
  curl -s "http://$( [ "$1" = a ] && echo 198.18.3.1 || echo 198.18.3.2 ):9108/metrics" |
    awk -v n="$2" -v l="${3:-}" '($1 == n || index($1, n "{") == 1) && index($1, l) { print $2; exit }'
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

echo "== failover: SIGKILL the active (a) under 16 long-lived connections"
lag=$(metric a ftpair_sync_lag_epochs)
"$lab" exec client "$py" "$traffic" echo-client --host 198.18.2.10 --port 7000 --conns 16 --seconds 8 --json \
  > /tmp/ftpair-demo-failover.json 2>/dev/null &
echo_pid=$!
sleep 3
dropped_before=$(metric b ftpair_forwarded_packets_total inside)
"$lab" signal a KILL >/dev/null
t0=$(date +%s%N)
for _ in $(seq 500); do [ "$(metric b ftpair_vip_owner)" = 1 ] && break; sleep 0.01; done
t1=$(date +%s%N)
wait $echo_pid || true
echo "   sync lag before the kill: ${lag} epochs"
echo "   b owns the virtual addresses after: $(( (t1 - t0) / 1000000 )) ms (polled; b's log has the exact time)"
grep -h "promoted" /run/ftpair-lab/b.log | tail -1 | sed 's/^/   /'
echo "   forwarded by b: ${dropped_before:-0} -> $(metric b ftpair_forwarded_packets_total inside) packets LAN->WAN"
echo "   connections: $(tail -1 /tmp/ftpair-demo-failover.json)"
[ "$(all_ok /tmp/ftpair-demo-failover.json)" = 1 ] || { echo "demo: a connection was lost in the failover" >&2; exit 1; }
echo "demo: all connections survived the failover"
