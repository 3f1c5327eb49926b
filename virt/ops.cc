#include "virt/ops.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <set>
#include <thread>

#include "failover/fencer.h"
#include "virt/conn.h"
#include "virt/domain.h"
#include "virt/hook.h"

namespace ftpair::virt {

namespace {

using Clock = std::chrono::steady_clock;

double secs_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

Status with_name(const std::string &what, Status st) {
  if (st.ok()) return st;
  return Status(st.code(), what + ": " + st.message());
}

InstanceMeta meta_for(const PairSpec &spec, const NodeSpec &n, const std::string &state) {
  InstanceMeta m;
  m.pair = spec.name;
  m.node = n.id;
  m.role = n.role;
  m.state = state;
  m.image = image_key(spec, n);
  m.memory_mib = n.memory_mib;
  m.vcpus = n.vcpus;
  m.address = n.mgmt_address;
  return m;
}

// An isolated network (a bridge, no DHCP or DNS; the host gets pair.host_address if set) for the
// management link, when the spec names a network that does not exist yet. *created: it made one.
Status ensure_network(Conn &conn, const std::string &name, const std::string &host_address, bool *created) {
  *created = false;
  virNetworkPtr net = virNetworkLookupByName(conn.get(), name.c_str());
  if (net != nullptr) {
    if (virNetworkIsActive(net) != 1 && virNetworkCreate(net) < 0) {
      std::string e = virt_error();
      virNetworkFree(net);
      return Unavailable("management network " + name + " exists but cannot be started: " + e);
    }
    virNetworkFree(net);
    return Status::Ok();
  }
  std::string br = "ftv" + std::to_string(std::hash<std::string>{}(name) % 1000000);
  std::string xml = "<network><name>" + xml_escape(name) + "</name><bridge name='" + br +
                    "' stp='off' delay='0'/><dns enable='no'/>";
  if (!host_address.empty()) {
    auto slash = host_address.find('/');
    xml += "<ip address='" + host_address.substr(0, slash) + "' prefix='" + host_address.substr(slash + 1) + "'/>";
  }
  xml += "</network>";
  net = virNetworkDefineXML(conn.get(), xml.c_str());
  if (net == nullptr) return Unavailable("cannot define management network " + name + ": " + virt_error());
  if (virNetworkCreate(net) < 0) {
    std::string e = virt_error();
    virNetworkUndefine(net);
    virNetworkFree(net);
    return Unavailable("cannot start management network " + name + ": " + e);
  }
  virNetworkFree(net);
  *created = true;
  return Status::Ok();
}

// Defines `xml` and starts it, waiting for "running". *ms gets define+start time.
Status define_and_start(Conn &conn, const std::string &xml, const std::string &name, Ms start_timeout, Dom *out) {
  Dom d(virDomainDefineXML(conn.get(), xml.c_str()));
  if (!d) return Unavailable("define " + name + ": " + virt_error());
  if (virDomainCreate(d.get()) < 0) return Unavailable("start " + name + ": " + virt_error());
  if (!wait_state(d.get(), VIR_DOMAIN_RUNNING, start_timeout))
    return Status(Code::DEADLINE_EXCEEDED, "start " + name + ": not running after " +
                                               std::to_string(start_timeout.count()) + " ms");
  *out = std::move(d);
  return Status::Ok();
}

const NodeSpec *node_by_id(const PairSpec &spec, const std::string &id) {
  return id == "a" ? &spec.a : id == "b" ? &spec.b : nullptr;
}

// A TCP connect with a deadline; the connected socket (blocking again) or -1.
int connect_within(const std::string &ip, uint16_t port, Ms deadline) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0) {
    ok = true;
  } else if (errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(deadline.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ok = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    }
  }
  if (!ok) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, 0);
  return fd;
}

// Is an ftpaird listening at ip:port?
bool reachable(const std::string &ip, uint16_t port, Ms deadline) {
  int fd = connect_within(ip, port, deadline);
  if (fd >= 0) ::close(fd);
  return fd >= 0;
}

// One line to a spare's claim listener (virt/guest.h) and its one-line answer; "" if the spare
// did not answer within the deadline.
std::string ask_spare(const std::string &ip, uint16_t port, const std::string &line, Ms deadline) {
  int fd = connect_within(ip, port, deadline);
  if (fd < 0) return "";
  timeval tv{static_cast<time_t>(deadline.count() / 1000), static_cast<suseconds_t>(deadline.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string msg = line + "\n", reply;
  if (::write(fd, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size())) {
    char ch;
    while (reply.size() < 1024 && ::read(fd, &ch, 1) == 1 && ch != '\n') reply += ch;
  }
  ::close(fd);
  return reply;
}

uint16_t claim_port(const PairSpec &spec) {
  auto it = spec.config.find("pool.port");
  return it == spec.config.end() ? kClaimPort : static_cast<uint16_t>(std::stoul(it->second));
}

std::string ip_of(const std::string &cidr) { return cidr.substr(0, cidr.find('/')); }

std::string new_token() {
  unsigned char b[16];
  std::string hex;
  if (RAND_bytes(b, sizeof b) != 1) return hex;
  static const char *d = "0123456789abcdef";
  for (unsigned char c : b) hex += {d[c >> 4], d[c & 15]};
  return hex;
}

// Polls until `dom`'s spare answers its claim listener (it has booted and commissioned itself).
Status wait_spare_ready(const std::string &ip, uint16_t port, Ms deadline) {
  auto end = Clock::now() + deadline;
  while (Clock::now() < end) {
    if (ask_spare(ip, port, "ping", Ms(1000)) == "ready") return Status::Ok();
    std::this_thread::sleep_for(Ms(250));
  }
  return Status(Code::DEADLINE_EXCEEDED, "spare at " + ip + " did not report ready on port " + std::to_string(port) +
                                             " within " + std::to_string(deadline.count()) + " ms");
}

// Stops one domain: ACPI shutdown with a timeout, then destroy. A paused domain (a spare)
// cannot react to ACPI and is destroyed at once.
Json stop_domain(Managed &m, Ms acpi) {
  Json step{{"step", "vm"}, {"domain", m.name}, {"role", m.meta.role}, {"state_before", state_name(m.state)}};
  auto t0 = Clock::now();
  int st = domain_state(m.dom.get());
  if (st == VIR_DOMAIN_SHUTOFF) {
    step["result"] = "already shut off";
  } else if (st == VIR_DOMAIN_PAUSED) {
    virDomainDestroy(m.dom.get());
    step["result"] = wait_state(m.dom.get(), VIR_DOMAIN_SHUTOFF, Ms(5000)) ? "destroyed (paused)" : "still running";
  } else {
    bool acpi_sent = virDomainShutdownFlags(m.dom.get(), VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) == 0;
    if (acpi_sent && wait_state(m.dom.get(), VIR_DOMAIN_SHUTOFF, acpi)) {
      step["result"] = "acpi shutdown";
    } else {
      virDomainDestroy(m.dom.get());
      bool off = wait_state(m.dom.get(), VIR_DOMAIN_SHUTOFF, Ms(5000));
      step["result"] = off ? (acpi_sent ? "destroyed after acpi timeout" : "destroyed (acpi refused)")
                           : "still running after destroy";
    }
  }
  step["seconds"] = secs_since(t0);
  return step;
}

}  // namespace

Status deploy(const PairSpec &spec, const Timeouts &t, Json *report) {
  auto t0 = Clock::now();
  Json nodes = Json::array();
  // The hook must see the allow-list before the first start.
  if (Status st = write_allowlist(spec.allowlist_dir, spec.name, spec.allowlist); !st.ok()) return st;
  std::set<std::string> created_networks;  // by this deploy, recorded on every node using them
  for (const NodeSpec *n : {&spec.a, &spec.b}) {
    auto tn = Clock::now();
    Conn conn;
    if (Status st = conn.open(n->uri, t.connect); !st.ok()) return with_name("deploy node " + n->id, st);
    for (auto &m : list_managed(conn, spec.name))
      if (m.meta.state == "member" && m.meta.node == n->id)
        return FailedPrecondition("deploy: pair " + spec.name + " already has node " + n->id + " (domain " + m.name +
                                  ", " + state_name(m.state) + "); shut it down or tear it down first");
    InstanceMeta meta = meta_for(spec, *n, "member");
    if (!n->mgmt_network.empty()) {
      bool created = false;
      if (Status st = ensure_network(conn, n->mgmt_network, spec.host_address, &created); !st.ok()) return st;
      if (created) created_networks.insert(n->mgmt_network);
      if (created_networks.count(n->mgmt_network)) meta.created_network = n->mgmt_network;
    }
    std::string name = spec.domain_name(n->id), uuid, action = "defined";
    // Reuse: a retained instance with the same image, memory and vCPUs, from any earlier pair.
    if (spec.reuse == "same-image")
      for (auto &r : list_managed(conn, "")) {
        if (r.meta.state != "retained" || r.meta.image != meta.image || r.meta.memory_mib != meta.memory_mib ||
            r.meta.vcpus != meta.vcpus || r.state != VIR_DOMAIN_SHUTOFF)
          continue;
        if (r.name != name && virDomainRename(r.dom.get(), name.c_str(), 0) < 0)
          return Unavailable("deploy: rename retained " + r.name + " to " + name + ": " + virt_error());
        char buf[VIR_UUID_STRING_BUFLEN];
        virDomainGetUUIDString(r.dom.get(), buf);
        uuid = buf;
        action = "reused " + r.name;
        break;
      }
    Dom d;
    if (Status st = define_and_start(conn, domain_xml(spec, *n, name, uuid, meta), name, t.start, &d); !st.ok())
      return with_name("deploy", st);
    nodes.push_back({{"node", n->id}, {"domain", name}, {"role", n->role}, {"action", action},
                     {"uri", n->uri}, {"seconds", secs_since(tn)}});
  }
  *report = {{"op", "deploy"}, {"pair", spec.name}, {"nodes", nodes}, {"seconds", secs_since(t0)}};
  return Status::Ok();
}

Status shutdown(const PairSpec &spec, const Timeouts &t, bool undefine, bool reuse, Json *report) {
  auto t0 = Clock::now();
  Json steps = Json::array();
  // The graph: live members and spares per URI; a member's role comes from its metadata.
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<Managed> members, spares;
  for (const std::string &uri : {spec.a.uri, spec.b.uri}) {
    bool seen = false;
    for (auto &c : conns) seen |= c->uri() == uri;
    if (seen) continue;
    auto c = std::make_unique<Conn>();
    if (Status st = c->open(uri, t.connect); !st.ok()) return with_name("shutdown", st);
    for (auto &m : list_managed(*c, spec.name)) (m.meta.state == "spare" ? spares : members).push_back(std::move(m));
    conns.push_back(std::move(c));
  }
  // Standby before active: the active keeps forwarding until the last moment.
  std::stable_sort(members.begin(), members.end(),
                   [](const Managed &x, const Managed &y) { return x.meta.role == "standby" && y.meta.role != "standby"; });
  // 1. Drain the daemons.
  for (auto &m : members) {
    std::string ip = m.meta.address.substr(0, m.meta.address.find('/'));
    if (ip.empty() && node_by_id(spec, m.meta.node)) ip = node_by_id(spec, m.meta.node)->mgmt_ip();
    Json step{{"step", "drain"}, {"domain", m.name}, {"role", m.meta.role}};
    auto ts = Clock::now();
    if (m.state != VIR_DOMAIN_RUNNING) {
      step["result"] = std::string("skipped: domain ") + state_name(m.state);
    } else if (!reachable(ip, spec.grpc_port, t.drain)) {
      step["result"] = "no daemon reachable at " + ip + ":" + std::to_string(spec.grpc_port) + " within " +
                       std::to_string(t.drain.count()) + " ms";
    } else {
      // ftpaird drains itself on SIGTERM/ACPI power-off (clean shutdown, snapshot); the VM step
      // below delivers that. Here we only confirm it was up to do so.
      step["result"] = "daemon reachable; drained by its clean shutdown on ACPI power-off";
    }
    step["seconds"] = secs_since(ts);
    steps.push_back(step);
  }
  // 2. The VMs: members standby-first, then the spares.
  std::vector<std::string> networks;
  for (auto *group : {&members, &spares})
    for (auto &m : *group) {
      steps.push_back(stop_domain(m, t.acpi));
      if (!m.meta.created_network.empty()) networks.push_back(m.meta.created_network);
      if (!undefine) continue;
      bool retain = reuse && spec.reuse == "same-image" && m.meta.state == "member";
      Json step{{"step", retain ? "retain" : "undefine"}, {"domain", m.name}};
      if (retain) {
        InstanceMeta r = m.meta;
        r.state = "retained";
        r.created_network.clear();
        Status st = set_meta(m.dom.get(), r);
        step["result"] = st.ok() ? "kept for reuse (image " + r.image.substr(0, 12) + ", " +
                                       std::to_string(r.memory_mib) + " MiB, " + std::to_string(r.vcpus) + " vCPU)"
                                 : st.message();
      } else {
        step["result"] = virDomainUndefine(m.dom.get()) == 0 ? "undefined" : virt_error();
      }
      steps.push_back(step);
    }
  // 3. Host resources the pair created.
  std::sort(networks.begin(), networks.end());
  networks.erase(std::unique(networks.begin(), networks.end()), networks.end());
  for (const auto &name : networks)
    for (auto &c : conns) {
      virNetworkPtr net = virNetworkLookupByName(c->get(), name.c_str());
      if (net == nullptr) continue;
      Json step{{"step", "network"}, {"network", name}, {"uri", c->uri()}};
      if (virNetworkIsActive(net) == 1) virNetworkDestroy(net);
      step["result"] = virNetworkUndefine(net) == 0 ? "released" : virt_error();
      virNetworkFree(net);
      steps.push_back(step);
    }
  bool all_off = true;
  for (auto *group : {&members, &spares})
    for (auto &m : *group) all_off &= domain_state(m.dom.get()) == VIR_DOMAIN_SHUTOFF || undefine;
  *report = {{"op", undefine ? "teardown" : "shutdown"}, {"pair", spec.name}, {"steps", steps},
             {"seconds", secs_since(t0)}};
  if (members.empty() && spares.empty()) return FailedPrecondition("shutdown: pair " + spec.name + " has no domains");
  return all_off ? Status::Ok() : Internal("shutdown: a domain is still running (see the report)");
}

Status pool_fill(const PairSpec &spec, const Timeouts &t, Json *report) {
  auto t0 = Clock::now();
  Conn conn;
  if (Status st = conn.open(spec.b.uri, t.connect); !st.ok()) return with_name("pool fill", st);
  Json spares = Json::array();
  auto live = list_managed(conn, spec.name);
  // A spare that replaced a node keeps its name and address as a member, so new spares take the
  // first free name and the first pool address no live domain of the pair uses.
  std::set<std::string> names, addresses;
  uint32_t have = 0;
  std::string created_network;  // spares share the members' management network
  for (auto &m : live) {
    if (!m.meta.created_network.empty() && m.meta.created_network == spec.b.mgmt_network)
      created_network = m.meta.created_network;
    names.insert(m.name);
    addresses.insert(m.meta.address);
    have += m.meta.state == "spare";
  }
  for (uint32_t i = 0; have < spec.pool_size; ++i) {
    NodeSpec s = spec.spare(i);
    std::string name = spec.domain_name(s.id);
    if (names.count(name)) continue;
    s.mgmt_address.clear();
    // A retired node's address is free again once its domain is gone.
    std::vector<std::string> candidates = spec.pool_addresses;
    candidates.push_back(spec.a.mgmt_address);
    candidates.push_back(spec.b.mgmt_address);
    for (const auto &a : candidates)
      if (!addresses.count(a)) {
        s.mgmt_address = a;
        break;
      }
    if (s.mgmt_address.empty())
      return FailedPrecondition("pool fill: every address in pair.pool.addresses (and the nodes') is in use");
    auto ts = Clock::now();
    Dom d;
    if (spec.guest_daemon && (s.pool_token = new_token()).empty())
      return Internal("pool fill: no random bytes for the claim token");
    InstanceMeta meta = meta_for(spec, s, "spare");
    meta.created_network = created_network;
    meta.token = s.pool_token;
    if (Status st = define_and_start(conn, domain_xml(spec, s, name, "", meta), name, t.start, &d);
        !st.ok())
      return with_name("pool fill", st);
    double boot_s = 0;
    if (spec.guest_daemon) {
      auto tb = Clock::now();
      if (Status st = wait_spare_ready(ip_of(s.mgmt_address), claim_port(spec), t.ready); !st.ok()) {
        virDomainDestroy(d.get());
        virDomainUndefine(d.get());
        return with_name("pool fill: " + name, st);
      }
      boot_s = secs_since(tb);
    }
    if (virDomainSuspend(d.get()) < 0 || !wait_state(d.get(), VIR_DOMAIN_PAUSED, Ms(5000)))
      return Unavailable("pool fill: cannot pause " + name + ": " + virt_error());
    names.insert(name);
    addresses.insert(s.mgmt_address);
    ++have;
    spares.push_back({{"domain", name}, {"address", s.mgmt_address}, {"seconds", secs_since(ts)}});
    if (spec.guest_daemon) spares.back()["ready_s"] = boot_s;
  }
  *report = {{"op", "pool-fill"}, {"pair", spec.name}, {"added", spares}, {"seconds", secs_since(t0)}};
  return Status::Ok();
}

Status pool_status(const PairSpec &spec, const Timeouts &t, Json *report) {
  Conn conn;
  if (Status st = conn.open(spec.b.uri, t.connect); !st.ok()) return with_name("pool status", st);
  Json doms = Json::array();
  size_t ready = 0;
  for (auto &m : list_managed(conn, spec.name)) {
    doms.push_back({{"domain", m.name}, {"state", m.meta.state}, {"node", m.meta.node}, {"role", m.meta.role},
                    {"domain_state", state_name(m.state)}});
    ready += m.meta.state == "spare" && m.state == VIR_DOMAIN_PAUSED;
  }
  *report = {{"op", "pool-status"}, {"pair", spec.name}, {"size", spec.pool_size}, {"ready", ready},
             {"domains", doms}};
  return Status::Ok();
}

namespace {

// Finds the member for node `failed` and checks that it no longer runs.
Status take_failed(Conn &conn, const PairSpec &spec, const std::string &failed, Managed *out) {
  for (auto &m : list_managed(conn, spec.name))
    if (m.meta.state == "member" && m.meta.node == failed) {
      if (m.state != VIR_DOMAIN_SHUTOFF && m.state != VIR_DOMAIN_CRASHED && m.state != VIR_DOMAIN_PAUSED)
        return FailedPrecondition("replace: node " + failed + " (" + m.name + ") is " + state_name(m.state) +
                                  "; fence it first");
      *out = std::move(m);
      return Status::Ok();
    }
  return Status::Ok();  // no member left for it (already undefined): nothing to retire
}

void retire(Managed &old, Json *report) {
  if (!old.dom) return;
  virDomainDestroy(old.dom.get());  // a suspended (fenced) domain is still a process
  (*report)["retired"] = {{"domain", old.name}, {"result", virDomainUndefine(old.dom.get()) == 0 ? "undefined" : virt_error()}};
}

}  // namespace

Status pool_replace(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                    Json *report) {
  if (node_by_id(spec, failed) == nullptr) return InvalidArgument("replace: --failed must be a or b, not '" + failed + "'");
  Conn conn;
  if (Status st = conn.open(spec.b.uri, t.connect); !st.ok()) return with_name("pool replace", st);
  Managed old;
  if (Status st = take_failed(conn, spec, failed, &old); !st.ok()) return st;
  auto t0 = Clock::now();
  Managed *spare = nullptr;
  auto live = list_managed(conn, spec.name);
  for (auto &m : live)
    if (m.meta.state == "spare" && m.state == VIR_DOMAIN_PAUSED) {
      spare = &m;
      break;
    }
  if (spare == nullptr) return FailedPrecondition("replace: pair " + spec.name + " has no paused spare in its pool");
  if (virDomainResume(spare->dom.get()) < 0) return Unavailable("replace: resume " + spare->name + ": " + virt_error());
  if (!wait_state(spare->dom.get(), VIR_DOMAIN_RUNNING, t.start))
    return Status(Code::DEADLINE_EXCEEDED, "replace: " + spare->name + " not running after resume");
  InstanceMeta m = spare->meta;
  m.state = "member";
  m.node = failed;
  m.role = "standby";
  double replace_s = secs_since(t0);
  *report = {{"op", "pool-replace"}, {"pair", spec.name}, {"failed", failed}, {"source", "pool"},
             {"domain", spare->name}, {"replace_s", replace_s},
             {"reached", "running as standby (metadata member/standby)"}};
  if (spec.guest_daemon) {
    // The spare takes the failed member's identity, so the surviving active (which keeps
    // reconnecting to that address) needs no change. Retire the failed domain first: its address
    // must be free (a suspended domain still holds it).
    retire(old, report);
    const NodeSpec *n = node_by_id(spec, failed);
    const NodeSpec *peer = node_by_id(spec, failed == "a" ? "b" : "a");
    std::string port = std::to_string(spec.grpc_port);
    std::string line = "assume token=" + m.token + " node=" + failed + " address=" + n->mgmt_address +
                       " peer=" + peer->mgmt_ip() + ":" + port;
    std::string answer = ask_spare(ip_of(m.address), claim_port(spec), line, Ms(5000));
    if (answer != "ok")
      return FailedPrecondition("replace: " + spare->name + " at " + m.address + " refused to assume node " + failed +
                                ": " + (answer.empty() ? "no answer on the claim port" : answer));
    (*report)["claimed_s"] = secs_since(t0);
    m.address = n->mgmt_address;
    m.token.clear();
    if (Status st = set_meta(spare->dom.get(), m); !st.ok()) return st;
    Json detail;
    Status st = wait(n->mgmt_ip() + ":" + port, peer->mgmt_ip() + ":" + port, t.sync, &detail);
    (*report)["sync"] = detail;
    if (!st.ok()) return with_name("replace: " + spare->name, st);
    (*report)["in_sync_s"] = secs_since(t0);
    (*report)["reached"] = "standby in sync";
  } else {
    if (Status st = set_meta(spare->dom.get(), m); !st.ok()) return st;
    retire(old, report);
  }
  auto tr = Clock::now();
  Json fill;
  Status st = pool_fill(spec, t, &fill);
  (*report)["refill_s"] = secs_since(tr);
  (*report)["refill"] = st.ok() ? fill : Json(st.message());
  return st;
}

Status replace_fresh(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                     Json *report) {
  const NodeSpec *n = node_by_id(spec, failed);
  if (n == nullptr) return InvalidArgument("replace: --failed must be a or b, not '" + failed + "'");
  Conn conn;
  if (Status st = conn.open(n->uri, t.connect); !st.ok()) return with_name("fresh replace", st);
  Managed old;
  if (Status st = take_failed(conn, spec, failed, &old); !st.ok()) return st;
  Json r;
  retire(old, &r);  // the name is needed again
  auto t0 = Clock::now();
  NodeSpec s = *n;
  s.role = "standby";
  std::string name = spec.domain_name(failed);
  Dom d;
  if (Status st = define_and_start(conn, domain_xml(spec, s, name, "", meta_for(spec, s, "member")), name, t.start, &d);
      !st.ok())
    return with_name("fresh replace", st);
  r.update({{"op", "replace-fresh"}, {"pair", spec.name}, {"failed", failed}, {"source", "fresh"}, {"domain", name},
            {"replace_s", secs_since(t0)}, {"reached", "running as standby (defined + started)"}});
  Status st;
  if (spec.guest_daemon) {
    const NodeSpec *peer = node_by_id(spec, failed == "a" ? "b" : "a");
    std::string port = std::to_string(spec.grpc_port);
    Json detail;
    st = wait(n->mgmt_ip() + ":" + port, peer->mgmt_ip() + ":" + port, t.sync, &detail);
    r["sync"] = detail;
    if (st.ok()) {
      r["in_sync_s"] = secs_since(t0);
      r["reached"] = "standby in sync";
    }
    st = with_name("fresh replace: " + name, st);
  }
  *report = r;
  return st;
}

Status fence_node(const PairSpec &spec, const std::string &node, const std::string &named, const std::string &action,
                  Ms deadline, Json *report) {
  const NodeSpec *n = node_by_id(spec, node);
  if (n == nullptr) return InvalidArgument("fence: node must be a or b, not '" + node + "'");
  // The member for that node may be a former spare with another name.
  std::string domain = named.empty() ? spec.domain_name(node) : named;
  if (named.empty()) {
    Conn conn;
    if (Status st = conn.open(n->uri, deadline); !st.ok()) return with_name("fence", st);
    for (auto &m : list_managed(conn, spec.name))
      if (m.meta.state == "member" && m.meta.node == node) domain = m.name;
  }
  fo::FenceConfig fc;
  fc.kind = fo::FenceKind::LIBVIRT;
  fc.libvirt_uri = n->uri;
  fc.domain = domain;
  fc.libvirt_action = action;
  Status st;
  auto fencer = fo::make_fencer(fc, &st);
  if (!fencer) return st;
  auto t0 = Clock::now();
  st = fencer->fence(deadline);
  *report = {{"op", "fence"}, {"pair", spec.name}, {"node", node}, {"domain", domain}, {"action", action},
             {"ok", st.ok()}, {"seconds", secs_since(t0)}};
  if (!st.ok()) (*report)["error"] = st.message();
  return st;
}

}  // namespace ftpair::virt
