#!/usr/bin/python3
"""Lab integration test: the NAT44 gateway as operators see it, with real kernel hosts.

    client  198.18.1.10 --+                                    +-- server 198.18.2.10
                          +-LAN- ftpaird a (b: case l) -WAN-+
    client2 198.18.1.11 --+   VIPs 198.18.1.1, 198.18.2.1   +-- router 198.18.2.254
                                                                 | 198.18.5.1, MTU 1400
                                                               remote 198.18.5.10

One node (a) active, DPDK ports on net_af_xdp (FTPAIR_LAB_PMD, default af_xdp here:
raw frames, fragments included; af_packet hands the NF kernel-reassembled datagrams).
Each case is its own check with what was expected and what was seen:

  a. traceroute -n -q 1 -w 1 in UDP, ICMP (-I) and TCP (-T -p 8080) modes, client ->
     remote: hops 198.18.1.1 (the gateway), 198.18.2.254 (router), 198.18.5.10
  b. tracepath -n client -> remote reports pmtu 1400
  c. ping -s 3000 loses nothing; a 4000-byte UDP datagram goes client -> remote and
     back (fragmented both ways)
  d. 2 MB TCP upload client -> remote:5001 through the 1400 link (remote advertises MSS
     1460 for the case, so the client's DF segments need path-MTU discovery: the
     router's Fragmentation Needed must reach the client through the NAT)
  e. UDP to a closed port on remote: ECONNREFUSED on a connected socket within 1 s
  f. hairpinning: client -> WAN VIP:8080 (port-forward to client2:8080) exchanges
     bytes and client2 sees the peer as 198.18.2.1; client -> 198.18.2.1:<client2's
     mapped UDP port> reaches client2 (under endpoint-independent filtering)
  g. endpoint-independent mapping: one local port to server and to remote, the same
     external port (port preservation alone passes this one); again with client and
     client2 on the same source port (it does not pass that one)
  h. filtering (nat.filtering, one daemon start per mode): after client -> remote:7000
     from port P, unsolicited datagrams to the mapping from remote:7001 and from
     server pass or not as the mode says
  i. a 10 s SYN flood (~10,000 packets/s, random spoofed sources in 198.19.0.0/16) at
     the port-forward while 16 TCP echo connections client -> remote keep exchanging
     checked bytes: all survive and new connections still open
  j. nat.max_sessions_per_host: 50: of 80 new UDP flows from client about 50 pass, the
     rest counted as drops{reason="host_session_limit"}; client2 still opens flows
  k. IPFIX session logging (nat.session_log) to nfdump's nfcapd at 198.18.3.254 (root
     namespace, mgmt bridge): 3 UDP mappings client -> remote each arrive as natEvent 6
     with client's address and port and the external address and port remote saw; node
     a's session-log metrics agree (records >= 3, no send errors) and nfcapd counts no
     sequence failure. Creates only: deletes take the 300 s UDP timeout
  l. pair a (active) + b (standby, in sync); SIGKILL of a: the EIM mapping (same
     external port toward a new destination; client2 holds the same local port, so
     port preservation alone cannot pass) and a hairpinned TCP flow survive on b.
     Both log to nfcapd: b does not re-announce the mappings it inherited, logs the
     new one it makes, and its IPFIX sequence continues from a's (replicated with the
     checkpoints), so b's count after n records is a's at the kill plus n

Config keys that today's daemon may not know (ports.<side>.mtu, nat.filtering,
nat.max_sessions_per_host) are first checked with `ftpaird --check`; a refused key is a
FAIL that quotes the daemon's error, and the cases that need it are not run.

Exit 0 = pass, 1 = fail, 77 = skip. Always "ftpair-lab down" at the end.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labutil as L  # noqa: E402
import ipfix_collector  # noqa: E402

PMD = os.environ.get("FTPAIR_LAB_PMD", "af_xdp")
NODE = "a"
UDP_PORT = 7000      # nattool udp-reflect on remote and server
TCP_ECHO = 7000      # traffic.py echo-server (TCP) on remote
SINK_PORT = 5001     # nattool tcp-sink on remote
CLOSED_PORT = 9999   # nothing listens there on remote
FWD = L.FORWARD_PORT
REMOTE_UDP = "%s:%d" % (L.REMOTE_IP, UDP_PORT)
SERVER_UDP = "%s:%d" % (L.SERVER_IP, UDP_PORT)
EXPECTED_HOPS = [L.LAN_VIP, L.ROUTER_IP, L.REMOTE_IP]
MODES = ("endpoint-independent", "address-dependent", "address-and-port-dependent")
# mode -> (from remote:7001 passes, from server passes)
FILTER_EXPECT = {"endpoint-independent": (True, True),
                 "address-dependent": (True, False),
                 "address-and-port-dependent": (False, False)}

MGMT_HOST_IP = "198.18.3.254"   # the root namespace on the mgmt bridge (the collector)
SESSION_LOG_DOMAIN = 4711
SESSION_LOG_FLUSH_MS = 200
K_PORTS = (44001, 44002, 44003)  # client's local ports for the logged mappings
REFUSED = {}         # config key -> the daemon's error text


# ------------------------------------------------------------------ helpers --

def nat(host, *args, timeout=20):
    return L.run_in(host, [L.PY, L.NATTOOL] + [str(a) for a in args], timeout=timeout)


def nat_json(host, *args, timeout=20):
    r = nat(host, *args, timeout=timeout)
    return L.last_json(r.stdout), r


def tail(r, n=300):
    return ((r.stdout or "") + (r.stderr or "")).strip()[-n:]


def port_of(hp):
    return int(hp.rpartition(":")[2]) if hp else None


def ip_of(hp):
    return hp.rpartition(":")[0] if hp else None


def base_env():
    return {"FTPAIR_LAB_PMD": PMD}


def key_ok(chk, key, env):
    """Does ftpaird accept the config that env adds (for key)? A refusal is a FAIL once."""
    if key in REFUSED:
        return False
    full = base_env()
    full.update(env)
    msg = L.config_refusal(full)
    if msg is not None:
        REFUSED[key] = msg
        chk.check("config: ftpaird accepts %s" % key, False, "ftpaird --check says: %s" % msg)
        return False
    return True


def nat_extra(**kv):
    return {"FTPAIR_LAB_NAT_EXTRA": "\n".join("%s: %s" % (k, v) for k, v in kv.items())}


def drops_now():
    return L.drops(L.scrape(NODE))


def drop_delta(d0):
    d1 = drops_now()
    return {k: d1.get(k, 0) - d0.get(k, 0) for k in set(d0) | set(d1)
            if d1.get(k, 0) - d0.get(k, 0)}


def stop_nodes():
    for n in ("a", "b"):
        L.lab("stop", n, check=False, timeout=30)


def start_phase(lab, chk, what, env, role=None, node=NODE, wait_ready=True):
    """Stop both nodes, wipe node's state, start node with env. True when it forwards."""
    stop_nodes()
    L.wipe_state(node)
    full = base_env()
    full.update(env)
    extra = ("--role", role) if role else ()
    r = lab.start_node(node, *extra, env=full, check=False)
    if not chk.check("%s: ftpaird %s started (%s)" % (what, node, PMD), r.returncode == 0,
                     "" if r.returncode == 0 else tail(r, 1500)):
        return False
    if not wait_ready:
        return True
    return ready(chk, what)


def ready(chk, what, timeout=20):
    """client2 -> remote UDP answered through the NAT; warm ARP for client and client2."""
    deadline = time.monotonic() + timeout
    j = None
    while time.monotonic() < deadline:
        j, r = nat_json("client2", "udp-eim", "--to", REMOTE_UDP, timeout=10)
        if j and j["seen"].get(REMOTE_UDP):
            break
        time.sleep(0.3)
    ok = bool(j and j["seen"].get(REMOTE_UDP))
    for h in ("client", "client2"):
        L.run_in(h, ["ping", "-c", 1, "-W", 1, L.LAN_VIP], timeout=5)
    return chk.check("%s: UDP client2 -> remote answered through the NAT within %d s"
                     % (what, timeout), ok, "last: %s" % (j,))


def start_servers(lab, chk):
    specs = [
        ("remote", [L.PY, L.NATTOOL, "udp-reflect", "--port", UDP_PORT], "LISTENING udp"),
        ("server", [L.PY, L.NATTOOL, "udp-reflect", "--port", UDP_PORT], "LISTENING udp"),
        ("remote", [L.PY, L.NATTOOL, "tcp-sink", "--port", SINK_PORT], "LISTENING tcp"),
        ("remote", [L.PY, L.TRAFFIC, "echo-server", "--port", TCP_ECHO], "LISTENING tcp"),
        ("remote", [L.PY, L.TRAFFIC, "echo-server", "--port", FWD], "LISTENING tcp"),
        ("client2", [L.PY, L.TRAFFIC, "echo-server", "--port", FWD], "LISTENING tcp"),
    ]
    bgs = {}
    ok = True
    for host, argv, ready_line in specs:
        b = lab.background(host, argv)
        good = b.wait_line(lambda s, w=ready_line: s.startswith(w), 10)
        ok &= bool(good)
        if not good:
            chk.check("%s listening in %s" % (" ".join(map(str, argv[1:4])), host), False,
                      "; ".join(b.snapshot()[-5:]))
        bgs[(host, argv[1], argv[-1])] = b  # (host, tool, port)
    return ok, bgs


# -------------------------------------------------------------------- cases --

def parse_hops(text):
    hops = []
    for line in (text or "").splitlines():
        m = re.match(r"\s*(\d+)\s+(.*)$", line)
        if not m:
            continue
        ip = next((t for t in m.group(2).split() if re.match(r"^\d+\.\d+\.\d+\.\d+$", t)), "*")
        hops.append(ip)
    return hops


def case_a_traceroute(chk):
    for mode, flags in (("UDP", []), ("ICMP", ["-I"]), ("TCP", ["-T", "-p", FWD])):
        seen = []
        for attempt in range(2):
            r = L.run_in("client", ["traceroute", "-n", "-q", 1, "-w", 1, "-m", 6] + flags
                         + [L.REMOTE_IP], timeout=30)
            hops = parse_hops(r.stdout.split("\n", 1)[1] if "\n" in r.stdout else "")
            seen.append(hops or tail(r))
            if hops == EXPECTED_HOPS:
                break
        chk.check("a. traceroute %s mode client -> %s: hops %s" % (mode, L.REMOTE_IP, EXPECTED_HOPS),
                  hops == EXPECTED_HOPS,
                  "seen %s" % " then ".join(str(s) for s in seen))


def case_b_tracepath(chk):
    L.run_in("client", ["ip", "route", "flush", "cache"])
    r = L.run_in("client", ["tracepath", "-n", "-m", 6, L.REMOTE_IP], timeout=40)
    m = re.search(r"Resume:\s*pmtu\s+(\d+)", r.stdout)
    pmtu = int(m.group(1)) if m else None
    chk.check("b. tracepath client -> %s reports pmtu %d" % (L.REMOTE_IP, L.REMOTE_MTU),
              pmtu == L.REMOTE_MTU,
              "pmtu %s; output: %s" % (pmtu, " | ".join(l.strip() for l in r.stdout.splitlines())[-600:]
                                       or tail(r)))


def case_c_fragments(chk):
    d0 = drops_now()
    r = L.run_in("client", ["ping", "-n", "-c", 5, "-i", 0.2, "-W", 2, "-s", 3000, L.REMOTE_IP],
                 timeout=20)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    tx, rx = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    chk.check("c. ping -c 5 -s 3000 client -> %s: 5 sent, 5 answered (fragmented both ways)"
              % L.REMOTE_IP, tx == 5 and rx == 5,
              "sent %s, answered %s; gateway drops during the case: %s; %s"
              % (tx, rx, drop_delta(d0), (m.group(0) if m else tail(r))))
    d0 = drops_now()
    j, r = nat_json("client", "udp-big", "--to", REMOTE_UDP, "--size", 4000, "--timeout", 1)
    j = j or {}
    chk.check("c. 4000-byte UDP datagram client -> remote and the 4000-byte reply back",
              j.get("ok") is True,
              "remote saw %s bytes (checksum match %s), client got a %s-byte reply in %s tries; "
              "gateway drops: %s %s" % (j.get("seen_len"), j.get("sum_match"), j.get("reply_len"),
                                        j.get("received"), drop_delta(d0), "" if j else tail(r)))


def case_d_upload(chk, bgs):
    # remote advertises MSS 1460 (as a host behind a tunnel would): the client's full-size
    # DF segments meet the 1400 link, and only the router's Fragmentation Needed, translated
    # by the gateway, lets the connection go on.
    via = ["default", "via", L.ROUTER_REMOTE_IP, "dev", "eth0"]
    L.run_in("remote", ["ip", "route", "change"] + via + ["advmss", 1460])
    L.run_in("client", ["ip", "route", "flush", "cache"])
    d0 = drops_now()
    size = 2 * 1024 * 1024
    try:
        j, r = nat_json("client", "tcp-upload", "--to", "%s:%d" % (L.REMOTE_IP, SINK_PORT),
                        "--bytes", size, "--timeout", 10, timeout=60)
    finally:
        L.run_in("remote", ["ip", "route", "change"] + via)
    rg = L.run_in("client", ["ip", "route", "get", L.REMOTE_IP])
    m = re.search(r"\bmtu (\d+)", rg.stdout)
    j = j or {}
    chk.check("d. 2 MB TCP upload client -> remote:%d completes through the 1400 link, bytes checked"
              % SINK_PORT, j.get("ok") is True,
              "sent %s, sink got %s bytes, sha256 match %s, %s s, error %s; client's path MTU "
              "to remote afterwards: %s; gateway drops: %s"
              % (j.get("sent"), j.get("sink_bytes"), j.get("sha_match"), j.get("elapsed_s"),
                 j.get("error"), m.group(1) if m else "not learnt (no PMTU exception)",
                 drop_delta(d0)))


def case_e_refused(chk):
    d0 = drops_now()
    j, r = nat_json("client", "udp-refused", "--to", "%s:%d" % (L.REMOTE_IP, CLOSED_PORT),
                    "--timeout", 1)
    j = j or {}
    chk.check("e. UDP to closed port %s:%d: connected socket gets ECONNREFUSED within 1 s"
              % (L.REMOTE_IP, CLOSED_PORT), j.get("refused") is True,
              "got %s after %s s; gateway drops: %s %s"
              % (j.get("error"), j.get("elapsed_s"), drop_delta(d0), "" if j else tail(r)))


def peers_after(bg, n0):
    res = []
    for line in bg.snapshot()[n0:]:
        p = line.split()
        if len(p) >= 2 and p[0] == "PEER":
            res.append(p[1])
    return res


def case_f_portforward_hairpin(lab, chk, bgs):
    echo2 = bgs[("client2", L.TRAFFIC, FWD)]
    n0 = len(echo2.snapshot())
    r = lab.traffic("client", "echo-client", "--host", L.WAN_VIP, "--port", FWD, "--conns", 1,
                    "--seconds", 1, "--connect-timeout", 3, "--op-timeout", 4, "--json", timeout=20)
    j = L.last_json(r.stdout) or {}
    L.wait_until(lambda: peers_after(echo2, n0), 1.0)
    peers = peers_after(echo2, n0)
    chk.check("f. hairpin: client -> %s:%d (port-forward to client2:%d) exchanges checked bytes"
              % (L.WAN_VIP, FWD, FWD), j.get("ok") == 1,
              "echo-client: %s" % (j or tail(r)))
    chk.check("f. hairpin: client2 sees the peer as %s:<mapped port>" % L.WAN_VIP,
              len(peers) >= 1 and all(ip_of(p) == L.WAN_VIP for p in peers),
              "client2's echo server saw %s (client is %s)" % (peers or "no connection",
                                                                L.CLIENT_IP))


def listen_mapping(lab, host, port, seconds):
    """Background udp-listen on host:port (first packet to remote:7000). (bg, mapped)."""
    bg = lab.background(host, [L.PY, L.NATTOOL, "udp-listen", "--bind-port", port, "--first",
                               REMOTE_UDP, "--seconds", seconds])
    line = bg.wait_line(lambda s: s.startswith("MAPPED"), 5)
    mapped = line.split()[1] if line else None
    return bg, (None if mapped in (None, "none") else mapped)


def received_from(bg, src_ip=None):
    res = []
    for line in bg.snapshot():
        p = line.split(None, 2)
        if len(p) >= 2 and p[0] == "RECV":
            res.append(p[1])
    return res


def case_f_mapped_hairpin(lab, chk, note=""):
    port = 40001
    bg, mapped = listen_mapping(lab, "client2", port, 4)
    if not chk.check("f. mapped-port hairpin: client2 (port %d) -> remote creates a mapping%s"
                     % (port, note), mapped is not None and ip_of(mapped) == L.WAN_VIP,
                     "remote saw %s" % mapped):
        bg.stop()
        return
    d0 = drops_now()
    nat("client", "udp-send", "--to", "%s:%d" % (L.WAN_VIP, port_of(mapped)), "--data",
        "hairpin-from-client", "--count", 3)
    L.wait_until(lambda: received_from(bg), 1.5)
    got = received_from(bg)
    bg.stop()
    chk.check("f. mapped-port hairpin: client -> %s (client2's mapping) reaches client2 from "
              "%s:<client's mapped port>%s" % (mapped, L.WAN_VIP, note),
              len(got) >= 1 and all(ip_of(g) == L.WAN_VIP for g in got),
              "client2 received from %s; gateway drops: %s" % (got or "nothing", drop_delta(d0)))


def case_g_eim(chk):
    port = 41001
    j, r = nat_json("client", "udp-eim", "--bind-port", port, "--to", SERVER_UDP, "--to", REMOTE_UDP)
    seen = (j or {}).get("seen", {})
    s, m = seen.get(SERVER_UDP), seen.get(REMOTE_UDP)
    chk.check("g. EIM: client port %d -> server and -> remote: same external %s:port"
              % (port, L.WAN_VIP),
              s and m and s == m and ip_of(s) == L.WAN_VIP,
              "server saw %s, remote saw %s %s" % (s, m, "" if j else tail(r)))

    port = 41002
    j2a, _ = nat_json("client2", "udp-eim", "--bind-port", port, "--to", REMOTE_UDP)
    ja, _ = nat_json("client", "udp-eim", "--bind-port", port, "--to", REMOTE_UDP, "--to", SERVER_UDP)
    j2b, _ = nat_json("client2", "udp-eim", "--bind-port", port, "--to", SERVER_UDP)
    c2r = (j2a or {}).get("seen", {}).get(REMOTE_UDP)
    c2s = (j2b or {}).get("seen", {}).get(SERVER_UDP)
    cr = (ja or {}).get("seen", {}).get(REMOTE_UDP)
    cs = (ja or {}).get("seen", {}).get(SERVER_UDP)
    detail = ("client2 (first): remote saw %s, then server saw %s; client: remote saw %s, server "
              "saw %s" % (c2r, c2s, cr, cs))
    chk.check("g. EIM under a source-port collision (client and client2 both port %d): each host "
              "keeps one external port toward both servers" % port,
              all((c2r, c2s, cr, cs)) and c2r == c2s and cr == cs, detail)
    chk.check("g. EIM under a source-port collision: the two hosts get different external ports",
              c2r and cr and c2r != cr, detail)


def case_h_filtering(lab, chk, mode, port):
    want_r, want_s = FILTER_EXPECT[mode]
    bg, mapped = listen_mapping(lab, "client", port, 4)
    if not chk.check("h. %s: client port %d -> remote:%d creates a mapping (reply passes)"
                     % (mode, port, UDP_PORT), mapped is not None, "remote saw %s" % mapped):
        bg.stop()
        return
    d0 = drops_now()
    dst = "%s:%d" % (L.WAN_VIP, port_of(mapped))
    nat("remote", "udp-send", "--bind-port", UDP_PORT + 1, "--to", dst, "--data", "from-remote-7001",
        "--count", 3)
    nat("server", "udp-send", "--bind-port", 7005, "--to", dst, "--data", "from-server",
        "--count", 3)
    time.sleep(1.0)
    bg.stop()
    got = [line for line in bg.snapshot() if line.startswith("RECV")]
    from_r = [x for x in got if "from-remote-7001" in x]
    from_s = [x for x in got if "from-server" in x]
    dd = drop_delta(d0)
    for who, want, have in (("remote:%d (same address, other port)" % (UDP_PORT + 1), want_r, from_r),
                            ("server %s (other address)" % L.SERVER_IP, want_s, from_s)):
        chk.check("h. %s: unsolicited datagram from %s to the mapping %s %s"
                  % (mode, who, dst, "passes" if want else "is dropped"),
                  bool(have) == want,
                  "client received %d of 3%s; gateway drops during the case: %s"
                  % (len(have), (" (" + have[0] + ")") if have else "", dd))


def case_i_flood(lab, chk):
    conns, secs = 16, 18
    d0 = drops_now()
    m0 = L.scrape(NODE)
    echo = lab.background("client", [L.PY, L.TRAFFIC, "echo-client", "--host", L.REMOTE_IP,
                                     "--port", TCP_ECHO, "--conns", conns, "--seconds", secs,
                                     "--rate-bytes-per-s", 16384, "--op-timeout", 8,
                                     "--connect-timeout", 5, "--json"])
    streaming = echo.wait_line(lambda s: s.startswith("STREAMING"), 10)
    connected = "CONNECTED %d/%d" % (conns, conns) in echo.snapshot()
    if not chk.check("i. %d TCP echo connections client -> remote:%d open before the flood"
                     % (conns, TCP_ECHO), streaming and connected,
                     "; ".join(echo.snapshot()[-4:])):
        echo.stop()
        return
    time.sleep(1.0)
    # hping3, as operators run it: two processes, 5,000 SYN/s each for 10 s, from two spoofed
    # addresses in 198.19.0.0/16 (the router blackholes the answers); hping3 moves the source
    # port on with every packet, so every SYN is a new flow at the port-forward.
    floods = [lab.background("remote", ["hping3", "-S", "-p", str(FWD), "-a", src, "-i", "u200",
                                        "-c", "50000", L.WAN_VIP])
              for src in ("198.19.0.7", "198.19.1.9")]
    for f in floods:
        f.wait_line(lambda s: s.startswith("HPING"), 15)
    time.sleep(0.5)
    prober = lab.background("client", [L.PY, L.NATTOOL, "tcp-connects", "--to",
                                       "%s:%d" % (L.REMOTE_IP, TCP_ECHO), "--seconds", 9,
                                       "--interval", 0.5, "--timeout", 2])
    t0 = time.monotonic()
    deadline = t0 + 25
    while (any(f.alive() for f in floods) or prober.alive()) and time.monotonic() < deadline:
        time.sleep(0.2)
    flood_s = time.monotonic() - t0
    for f in floods:
        f.stop()
    prober.stop()
    sent = 0
    for f in floods:
        for line in f.snapshot():
            mt = re.search(r"(\d+) packets transmitted", line)
            if mt:
                sent += int(mt.group(1))
    flood_res = {"sent": sent, "seconds": round(flood_s, 1), "tool": "hping3 x2"}
    probes = L.last_json("\n".join(prober.snapshot())) or {}
    m1 = L.scrape(NODE)
    j = L.client_result(echo, secs + 20)
    dd = drop_delta(d0)
    table = ("flow table after the flood: %g of %g, %g flows created, %g table-full refusals"
             % (L.metric(m1, "ftpair_flows"), L.metric(m1, "ftpair_flows_capacity"),
                L.metric(m1, "ftpair_flows_created_total") - L.metric(m0, "ftpair_flows_created_total"),
                L.metric(m1, "ftpair_flow_table_full_total") - L.metric(m0, "ftpair_flow_table_full_total")))
    chk.check("i. hping3 SYN flood at %s:%d ran (~10,000 packets/s for ~10 s)" % (L.WAN_VIP, FWD),
              flood_res.get("sent", 0) >= 90000 and flood_s <= 14,
              "flood: %s; %s" % (flood_res, table))
    chk.check("i. all %d TCP echo connections survived the flood, every byte checked" % conns,
              j and j.get("ok") == conns and not j.get("reset") and not j.get("corrupt")
              and not j.get("timeout"),
              "echo-client: %s; gateway drops during the case: %s; %s" % (j, dd, table))
    chk.check("i. new TCP connections client -> remote:%d open (and echo) throughout the flood"
              % TCP_ECHO, probes.get("tries", 0) >= 8 and probes.get("ok") == probes.get("tries"),
              "%s of %s new connections every 0.5 s worked within 2 s: [t_s, ok, ms|error] %s; %s"
              % (probes.get("ok"), probes.get("tries"), probes.get("results"), table))
    rr = lab.traffic("client", "tcp-probe", "--host", L.REMOTE_IP, "--port", TCP_ECHO, "--timeout", 2,
                     timeout=10)
    pj = L.last_json(rr.stdout) or {}
    chk.check("i. a new connection opens right after the flood", pj.get("connected") is True, str(pj))
    pid = L.node_pid(NODE)
    chk.check("i. ftpaird still running after the flood", pid and L.pid_alive(pid), "pid %s" % pid)


def case_j_host_limit(chk):
    d0 = drops_now()
    # One resend for the unanswered: a datagram lost in the lab is not a refusal, so with it
    # exactly 50 pass and every other flow is refused at least once.
    j, r = nat_json("client", "udp-flows", "--to", REMOTE_UDP, "--count", 80, "--timeout", 2,
                    "--retries", 1, timeout=30)
    j = j or {}
    ans = j.get("answered", -1)
    time.sleep(0.5)
    dd = drop_delta(d0)
    lim = dd.get("host_session_limit", 0)
    chk.check("j. max_sessions_per_host 50: exactly 50 of 80 new UDP flows from client pass",
              ans == 50, "%s answered (%s); gateway drops: %s" % (ans, j or tail(r), dd))
    chk.check('j. the refused flows are counted as drops{reason="host_session_limit"}',
              ans >= 0 and lim >= 80 - ans, "delta %g for %d unanswered flows; all drops: %s"
              % (lim, 80 - ans if ans >= 0 else -1, dd))
    j2, r2 = nat_json("client2", "udp-flows", "--to", REMOTE_UDP, "--count", 10, "--timeout", 2)
    j2 = j2 or {}
    chk.check("j. another LAN host (client2) still opens flows: 10 of 10 answered",
              j2.get("answered") == 10, "%s" % (j2 or tail(r2)))


def case_k_ipfix(lab, chk, env):
    """nfcapd (nfdump) in the root namespace on the mgmt bridge's 198.18.3.254; node a
    exports to it over mgmt0. Three UDP mappings from client; each must come back from the
    collector as a NAT44 BIB create (natEvent 6) with the addresses and ports remote saw.
    Only creates are checked: a mapping is deleted when its last session expires, and the
    shortest way there from the lab is a UDP timeout (300 s) or a closed TCP session's
    240 s; the delete records (natEvent 7) are covered by test_ipfix_collector.py and the
    exporter's unit tests."""
    what = "k. session log"
    have = ipfix_collector.available()
    if not chk.check("k. nfcapd and nfdump installed (Debian package nfdump)", have,
                     "" if have else "not found in PATH; tools/install-deps.sh installs nfdump"):
        return
    try:
        col = ipfix_collector.start(host=MGMT_HOST_IP)
    except (RuntimeError, OSError) as e:
        chk.check("k. nfcapd listening on %s" % MGMT_HOST_IP, False, str(e)[-600:])
        return
    L.log("collector: %s" % " ".join(col.cmd))
    events, seen, m, t0, t1 = None, {}, {}, time.time(), None
    try:
        sl = ('{collector: "%s:%d", observation_domain: %d, flush_ms: %d, template_refresh_s: 5}'
              % (MGMT_HOST_IP, col.port, SESSION_LOG_DOMAIN, SESSION_LOG_FLUSH_MS))
        kenv = nat_extra(session_log=sl)
        if not key_ok(chk, "nat.session_log", kenv):
            return
        if not start_phase(lab, chk, what, dict(env, **kenv)):
            return
        r0 = L.node_metric(NODE, "ftpair_session_log_records_total")
        t0 = time.time()
        for p in K_PORTS:
            j, _ = nat_json("client", "udp-eim", "--bind-port", p, "--to", REMOTE_UDP)
            seen[p] = (j or {}).get("seen", {}).get(REMOTE_UDP)
        t1 = time.time()
        if not chk.check("k. 3 UDP mappings client ports %s -> remote:%d" % (list(K_PORTS), UDP_PORT),
                         all(ip_of(v) == L.WAN_VIP for v in seen.values()), "remote saw %s" % seen):
            return
        # records_total counts records in messages the kernel took: past that, only the
        # bridge and nfcapd's read stand between them and the file
        L.wait_until(lambda: L.node_metric(NODE, "ftpair_session_log_records_total") >= r0 + len(K_PORTS),
                     3 + SESSION_LOG_FLUSH_MS / 1000.0, 0.05)
        time.sleep(0.5)
        m = L.scrape(NODE)
    finally:
        try:
            events = col.stop()
        except (RuntimeError, OSError) as e:
            chk.check("k. nfdump reads back what nfcapd stored", False, str(e)[-600:])
    if events is None or not m:
        return
    recs = L.metric(m, "ftpair_session_log_records_total")
    errs = L.metric(m, "ftpair_session_log_send_errors_total")
    chk.check("k. node a: ftpair_session_log_records_total >= %d and send_errors_total == 0" % len(K_PORTS),
              recs >= len(K_PORTS) and errs == 0,
              "records %g, messages %g, send errors %g, sequence %g"
              % (recs, L.metric(m, "ftpair_session_log_messages_total"), errs,
                 L.metric(m, "ftpair_session_log_sequence")))
    # the ready() probes from client2 are mappings too: every record the node counted
    # must be in the collector's file, no more, no fewer
    chk.check("k. the collector decoded every record node a exported (%g), none twice" % recs,
              len(events) == recs and len({tuple(sorted(e.items())) for e in events}) == len(events),
              "nfdump gave %d events: %s" % (len(events), events[:8]))
    chk.check("k. nfcapd counted no IPFIX sequence failure", col.stats.get("sequence_failures") == 0,
              "stats %s; nfcapd log: %s" % (col.stats, " | ".join(col.log.splitlines()[-6:])[-400:]))
    for p in K_PORTS:
        want = dict(nat_event=6, proto=17, in_ip=L.CLIENT_IP, in_port=p, nat_ip=L.WAN_VIP,
                    nat_port=port_of(seen[p]))
        got = [e for e in events if e["in_ip"] == L.CLIENT_IP and e["in_port"] == p]
        ok = (len(got) == 1 and all(got[0][k] == v for k, v in want.items())
              and got[0]["unix_ms"] is not None and t0 - 2 <= got[0]["unix_ms"] / 1000.0 <= t1 + 2)
        chk.check("k. natEvent 6 (NAT44 BIB create) for UDP %s:%d -> %s (the port remote saw), "
                  "time within the test's" % (L.CLIENT_IP, p, seen[p]), ok,
                  "want %s at %.3f..%.3f s; collector has %s" % (want, t0, t1, got or "none for this port"))


def wait_pair(chk, active, what, timeout=25):
    standby = "b" if active == "a" else "a"
    m = L.node_metric
    ok = L.wait_until(lambda: m(active, "ftpair_vip_owner") == 1
                      and m(active, "ftpair_replication_in_sync") == 1
                      and m(standby, "ftpair_role", state="STANDBY_READY") == 1, timeout, 0.2)
    return chk.check("%s: %s active, %s standby in sync" % (what, active, standby), ok,
                     "vip_owner(%s)=%g in_sync=%g standby_ready(%s)=%g"
                     % (active, m(active, "ftpair_vip_owner"),
                        m(active, "ftpair_replication_in_sync"), standby,
                        m(standby, "ftpair_role", state="STANDBY_READY")))


def case_l_failover(lab, chk, env):
    """The pair; with the session log on both nodes when nfcapd is there (see case k)."""
    col = None
    if ipfix_collector.available():
        try:
            col = ipfix_collector.start(host=MGMT_HOST_IP)
        except (RuntimeError, OSError) as e:
            chk.check("l. nfcapd listening on %s" % MGMT_HOST_IP, False, str(e)[-600:])
    if col:
        sl = ('{collector: "%s:%d", observation_domain: %d, flush_ms: %d, template_refresh_s: 5}'
              % (MGMT_HOST_IP, col.port, SESSION_LOG_DOMAIN, SESSION_LOG_FLUSH_MS))
        env = dict(env, **nat_extra(session_log=sl))
    log = {}
    try:
        case_l_pair(lab, chk, env, log if col else None)
    finally:
        events = None
        if col:
            try:
                events = col.stop()
            except (RuntimeError, OSError) as e:
                chk.check("l. nfdump reads back what nfcapd stored", False, str(e)[-600:])
    if events is not None and log.get("b_seq") is not None:
        check_log_across_failover(chk, col, events, log)


def check_log_across_failover(chk, col, events, log):
    """What the collector holds after a's kill and b's promotion (case l)."""
    def creates(port):
        return [e for e in events if e["nat_event"] == 6 and e["in_ip"] == L.CLIENT_IP and e["in_port"] == port]
    inherited, new = creates(log["port"]), creates(log["new_port"])
    chk.check("l. session log: client port %d's mapping was announced once (by a; b inherited it "
              "without announcing it again)" % log["port"], len(inherited) == 1,
              "collector has %s" % inherited)
    chk.check("l. session log: b announced the mapping it made after the failover (client port %d "
              "-> %s)" % (log["new_port"], log["new_seen"]),
              len(new) == 1 and new[0]["nat_port"] == port_of(log["new_seen"]), "collector has %s" % new)
    chk.check("l. session log: b's IPFIX sequence continues a's: %d at the kill + %d record(s) "
              "b exported = %d" % (log["a_seq"], log["b_recs"], log["a_seq"] + log["b_recs"]),
              log["b_seq"] == log["a_seq"] + log["b_recs"],
              "b's ftpair_session_log_sequence %s; a's records %s, b's %s"
              % (log["b_seq"], log["a_recs"], log["b_recs"]))
    chk.check("l. nfcapd counted no IPFIX sequence failure", col.stats.get("sequence_failures") == 0,
              "stats %s; nfcapd log: %s" % (col.stats, " | ".join(col.log.splitlines()[-6:])[-400:]))


def case_l_pair(lab, chk, env, log):
    what = "l. pair"
    if not start_phase(lab, chk, what, env, role="active"):
        return
    full = base_env()
    full.update(env)
    L.wipe_state("b")
    r = lab.start_node("b", "--role", "standby", env=full, check=False)
    if not chk.check("l. ftpaird b started as standby", r.returncode == 0, tail(r, 1500)):
        return
    if not wait_pair(chk, "a", what):
        return
    # client2 takes external port 42001 first, so client's mapping for local port 42001 is
    # some other port: port preservation alone cannot pass the check after the failover.
    port = 42001
    j2, _ = nat_json("client2", "udp-eim", "--bind-port", port, "--to", REMOTE_UDP)
    j, _ = nat_json("client", "udp-eim", "--bind-port", port, "--to", REMOTE_UDP)
    before = (j or {}).get("seen", {}).get(REMOTE_UDP)
    if not chk.check("l. client port %d -> remote: mapping created on a (client2 holds the same "
                     "local port)" % port, before,
                     "client: %s; client2: %s" % (j, j2)):
        return
    conns, secs = 2, 10
    echo = lab.background("client", [L.PY, L.TRAFFIC, "echo-client", "--host", L.WAN_VIP,
                                     "--port", FWD, "--conns", conns, "--seconds", secs,
                                     "--rate-bytes-per-s", 16384, "--op-timeout", 8,
                                     "--connect-timeout", 5, "--json"])
    streaming = echo.wait_line(lambda s: s.startswith("STREAMING"), 8)
    connected = "CONNECTED %d/%d" % (conns, conns) in echo.snapshot()
    chk.check("l. hairpinned TCP echo client -> %s:%d -> client2: %d connections streaming "
              "before the kill" % (L.WAN_VIP, FWD, conns), streaming and connected,
              "; ".join(echo.snapshot()[-4:])[-400:])
    time.sleep(1.0)
    if os.access(L.FTPAIRCTL, os.X_OK):
        rc, doc, err = L.ctl("a", "checkpoint", timeout=10, rpc_timeout=None)
        L.log("checkpoint before the kill: rc %d %s" % (rc, err or ""))
    time.sleep(1.0)
    if log is not None:
        # quiet for a second: every event of a is acknowledged by b and exported
        log["a_seq"] = L.node_metric("a", "ftpair_session_log_sequence")
        log["a_recs"] = L.node_metric("a", "ftpair_session_log_records_total")
    t0 = time.monotonic()
    L.lab("signal", "a", "KILL", check=False)
    took = L.wait_until(lambda: L.node_metric("b", "ftpair_vip_owner") == 1, 10, 0.05)
    chk.check("l. b took over after SIGKILL of a", took, "after %.1f s" % (time.monotonic() - t0))
    j, _ = nat_json("client", "udp-eim", "--bind-port", port, "--to", SERVER_UDP)
    after = (j or {}).get("seen", {}).get(SERVER_UDP)
    chk.check("l. EIM mapping survived: client port %d -> server (new destination) via b uses "
              "the same external port" % port, after and after == before,
              "before the kill remote saw %s, after it server saw %s" % (before, after))
    if log is not None and took:
        log["port"], log["new_port"] = port, port + 1
        j, _ = nat_json("client", "udp-eim", "--bind-port", port + 1, "--to", REMOTE_UDP)
        log["new_seen"] = (j or {}).get("seen", {}).get(REMOTE_UDP)
        # b has no standby now: nothing holds its log back
        L.wait_until(lambda: L.node_metric("b", "ftpair_session_log_records_total") >= 1,
                     3 + SESSION_LOG_FLUSH_MS / 1000.0, 0.05)
        time.sleep(0.5)
        log["b_recs"] = L.node_metric("b", "ftpair_session_log_records_total")
        log["b_seq"] = L.node_metric("b", "ftpair_session_log_sequence")
    res = L.client_result(echo, secs + 20)
    if streaming and connected:
        chk.check("l. hairpinned TCP flows (%d) survived the failover, every byte checked" % conns,
                  res and res.get("ok") == conns and not res.get("reset") and not res.get("corrupt"),
                  "echo-client: %s" % res)
    else:
        chk.check("l. hairpinned TCP flows survived the failover", False,
                  "not testable: no hairpinned connection opened before the kill (see case f)")


# --------------------------------------------------------------------- main --

def main():
    L.require_lab(need=("traceroute", "tracepath", "ping"))
    if not os.access(L.NATTOOL, os.X_OK):
        L.skip("%s missing" % L.NATTOOL)
    with L.LabSession(deadline_s=280) as lab:
        chk = lab.checker
        lab.setup()
        ok, bgs = start_servers(lab, chk)
        if not chk.check("servers listening (remote, server, client2)", ok):
            return lab.exit_code()

        # ---- main run: a alone, EIF filtering, ports with an MTU (when accepted)
        env = {}
        if key_ok(chk, "ports.<side>.mtu", {"FTPAIR_LAB_MTU": 1500}):
            env["FTPAIR_LAB_MTU"] = 1500
        eif = key_ok(chk, "nat.filtering", nat_extra(filtering="endpoint-independent"))
        main_env = dict(env, **(nat_extra(filtering="endpoint-independent") if eif else {}))
        if start_phase(lab, chk, "main", main_env):
            case_a_traceroute(chk)
            case_b_tracepath(chk)
            case_c_fragments(chk)
            case_d_upload(chk, bgs)
            case_e_refused(chk)
            case_f_portforward_hairpin(lab, chk, bgs)
            case_f_mapped_hairpin(lab, chk, "" if eif else
                                  " (filtering: the daemon's default; nat.filtering refused)")
            case_g_eim(chk)
            if eif:
                case_h_filtering(lab, chk, "endpoint-independent", 43001)
            case_i_flood(lab, chk)
        if not eif:
            for mode in MODES:
                chk.check("h. %s filtering" % mode, False,
                          "not run: ftpaird refuses nat.filtering: %s" % REFUSED.get("nat.filtering"))

        # ---- one daemon start per remaining filtering mode
        if eif:
            for i, mode in enumerate(MODES[1:]):
                if start_phase(lab, chk, "h. %s" % mode, dict(env, **nat_extra(filtering=mode))):
                    case_h_filtering(lab, chk, mode, 43002 + i)

        # ---- per-host session limit
        lim_env = nat_extra(max_sessions_per_host=50)
        if key_ok(chk, "nat.max_sessions_per_host", lim_env):
            if start_phase(lab, chk, "j. host limit", dict(env, **lim_env)):
                case_j_host_limit(chk)
        else:
            chk.check("j. per-host session limit", False, "not run: ftpaird refuses "
                      "nat.max_sessions_per_host: %s" % REFUSED.get("nat.max_sessions_per_host"))

        # ---- session logging to a real IPFIX collector (nfcapd on the mgmt network)
        case_k_ipfix(lab, chk, env)

        # ---- the pair: failover keeps the mapping and the hairpinned flow
        case_l_failover(lab, chk, main_env)

        if chk.failed:
            for n in ("a", "b"):
                print("---- tail of %s/%s.log ----\n%s----" % (L.RUN, n, L.node_log_tail(n, 25)))
    return lab.exit_code()


if __name__ == "__main__":
    L.run_main(main)
