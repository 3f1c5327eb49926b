#!/usr/bin/python3
"""Short failovers under iperf3 in the lab (issue 19's investigation, docs/BENCHMARKS.md).

Each RUN is MODE:SECONDS:TIMERS:
  MODE     i = iperf3 -P 2 at full rate beside the 8 byte-checked echo connections; n = echo only
  SECONDS  the active (a) is SIGKILLed this long after the pair is ready (armed, with dp)
  TIMERS   dp = dataplane beats 1 ms x 3, 2 ms probe; cp = control-plane beats 5 ms x 8;
           a "nokill" suffix (dpnokill, cpnokill) leaves the active alone
The pair is started afresh for each run in strict mode. The script reports whether a failover
came before the kill (spurious), the echo client's result and both nodes' drops by reason.

  FTPAIRD=build/control/ftpaird tools/bench/failover_under_load.py i:20:dp i:20:cp i:20:cpnokill
"""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "lab"))
import labutil as L  # noqa: E402
import failover_bench as FB  # noqa: E402


def state(tag):
    """The bridges' forwarding entries for the VIPs' virtual MACs, and the new active's counters."""
    fdb = []
    for br in ("ftpbr-lan", "ftpbr-wan"):
        out = subprocess.run(["bridge", "fdb", "show", "br", L.PREFIX + br], capture_output=True, text=True).stdout
        fdb += [br + ": " + ln.strip() for ln in out.splitlines() if "00:00:5e" in ln]
    sc = L.scrape("b") or {}
    cnt = {}
    if sc:
        for k in ("rx_packets", "tx_packets", "tx_dropped"):
            cnt[k] = {p: L.metric(sc, "ftpair_port_%s_total" % k, port=p) for p in ("inside", "outside")}
        cnt["flows"] = L.metric(sc, "ftpair_flows")
        cnt["garps"] = L.metric(sc, "ftpair_gratuitous_arp_total")
        cnt["drops"] = {k: v for k, v in L.drops(sc).items() if v}
    L.log("%s: fdb %s; b %s" % (tag, " | ".join(fdb), cnt))


def run(lab, bench, iperf_on, before_s, dp, kill):
    bench.start_pair(FB.DP_DEFAULT if dp else 5, 0 if dp else 8)
    total = before_s + 20
    ip = None
    if iperf_on:
        ip = lab.background("client", ["iperf3", "-c", L.SERVER_IP, "-p", FB.IPERF_PORT, "-t", total, "-P", "2",
                                       "--connect-timeout", "3000"])
    c = L.start_client(lab, 8, total)
    time.sleep(before_s)
    spurious = FB.m("a", "ftpair_vip_owner") != 1
    if kill and not spurious:
        os.kill(L.node_pid("a"), 9)
    took = (not kill and not spurious) or bool(L.wait_until(lambda: FB.m("b", "ftpair_vip_owner") == 1, 10, 0.01))
    if took:
        time.sleep(0.5)
        # Where the client and the server send now (the VIPs' neighbour entries), and what the
        # new active says it sent: the GARPs and any transmit refused.
        for host in ("client", "server"):
            L.log("%s neighbours 0.5 s after the failover: %s" % (host, " | ".join(
                ln for ln in L.run_in(host, ["ip", "neigh"]).stdout.splitlines() if "198.18" in ln)))
        state("0.5 s after the failover")
        time.sleep(3)
        state("3.5 s after the failover")
    j = L.client_result(c, total + 30) or {}
    if ip:
        ip.stop(timeout=10)
    drops = {}
    for n in ("a", "b"):
        sc = L.scrape(n)
        drops[n] = {k: v for k, v in L.drops(sc).items() if v} if sc else "(down)"
    L.log("iperf=%s timers=%s kill_after=%s spurious_before_kill=%s b_active=%s echo=%s drops=%s" % (
        iperf_on, "dp" if dp else "cp", before_s if kill else None, spurious, took,
        {k: j.get(k) for k in ("conns", "ok", "max_gap_ms", "reset", "timeout", "errors")}, drops))


def main():
    specs = sys.argv[1:] or ["i:20:dp"]
    L.require_lab(need=("iperf3",))
    with L.LabSession(deadline_s=3600) as lab:
        lab.setup()

        class Args:
            pass
        bench = FB.Bench(lab, Args())
        echo = lab.background("server", [L.PY, L.TRAFFIC, "echo-server", "--port", FB.ECHO_PORT])
        echo.wait_line(lambda s: s.startswith("LISTENING"), 10)
        srv = lab.background("server", ["iperf3", "-s", "-p", FB.IPERF_PORT])
        for spec in specs:
            mode, secs, timers = spec.split(":")
            run(lab, bench, mode == "i", int(secs), timers.startswith("dp"), not timers.endswith("nokill"))
        srv.stop()
        echo.stop()
    return lab.exit_code()


if __name__ == "__main__":
    sys.exit(main())
