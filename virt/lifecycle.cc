#include "virt/lifecycle.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>

#include "virt/domain.h"
#include "virt/fence_libvirt.h"
#include "virt/hook.h"
#include "virt/managed.h"
#include "virt/sockets.h"

namespace ftpair::virt {

namespace {

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

// Stops one domain: ACPI shutdown with a timeout, then destroy. A paused domain (a spare)
// cannot react to ACPI and is destroyed at once.
Json stop_domain(Managed &m, const std::string &role, Ms acpi) {
  Json step{{"step", "vm"}, {"domain", m.name}, {"role", role}, {"state_before", state_name(m.state)}};
  auto t0 = Clock::now();
  auto wall0 = std::chrono::system_clock::now();
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
  auto wall1 = std::chrono::system_clock::now();
  step["seconds"] = secs_since(t0);
  // Wall clock, for lining the stop up with what the pair's clients saw: when the stop was asked,
  // and when the domain was seen shut off (the wait polls every 5 ms).
  step["asked_unix"] = unix_seconds(wall0);
  if (domain_state(m.dom.get()) == VIR_DOMAIN_SHUTOFF) step["off_unix"] = unix_seconds(wall1);
  return step;
}

}  // namespace

Status define_and_start(Conn &conn, const std::string &xml, const std::string &name, Ms start_timeout, Dom *out) {
  Dom d(virDomainDefineXML(conn.get(), xml.c_str()));
  if (!d) return Unavailable("define " + name + ": " + virt_error());
  if (virDomainCreate(d.get()) < 0) return Unavailable("start " + name + ": " + virt_error());
  if (!wait_state(d.get(), VIR_DOMAIN_RUNNING, start_timeout))
    return DeadlineExceeded("start " + name + ": not running after " + std::to_string(start_timeout.count()) + " ms");
  *out = std::move(d);
  return Status::Ok();
}

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

Status shutdown(const PairSpec &spec, const Timeouts &t, const DaemonOps &ops, bool undefine, bool reuse, Json *report) {
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
  // The drain asks the deployed standby first.
  std::stable_sort(members.begin(), members.end(),
                   [](const Managed &x, const Managed &y) { return x.meta.role == "standby" && y.meta.role != "standby"; });
  // 1. Roles: what each running member's daemon says it is now; the metadata's role otherwise.
  std::map<std::string, std::string> role_now;  // domain -> active | standby
  std::string active_addr, standby_addr, drain_error;
  bool standby_in_sync = false;
  for (auto &m : members) {
    std::string ip = ip_of(m.meta.address);
    if (ip.empty() && spec.node(m.meta.node)) ip = spec.node(m.meta.node)->mgmt_ip();
    const std::string addr = ip + ":" + std::to_string(spec.grpc_port);
    Json step{{"step", "drain"}, {"domain", m.name}, {"role_deployed", m.meta.role}};
    auto ts = Clock::now();
    role_now[m.name] = m.meta.role;
    DaemonView v;
    if (m.state != VIR_DOMAIN_RUNNING) {
      step["result"] = std::string("skipped: domain ") + state_name(m.state);
    } else if (ops.status) {
      if (Status st = ops.status(addr, t.drain, &v); !st.ok()) {
        step["result"] = "no daemon answered at " + addr + " within " + std::to_string(t.drain.count()) + " ms: " +
                         st.message();
      } else {
        step["result"] = "node " + v.node_id + " is " + v.role + " (" + v.state + "), " + std::to_string(v.flows) +
                         " flows" + (v.role == "standby" ? std::string(v.in_sync ? ", in sync" : ", not in sync") : "");
        step["role"] = v.role;
        if (v.role == "active" || v.role == "standby") role_now[m.name] = v.role;
        if (v.role == "active") active_addr = addr;
        if (v.role == "standby") standby_addr = addr, standby_in_sync = v.in_sync;
      }
    } else if (!reachable(ip, spec.grpc_port, t.drain)) {
      step["result"] = "no daemon reachable at " + addr + " within " + std::to_string(t.drain.count()) + " ms";
    } else {
      step["result"] = "daemon reachable (no daemon operations: its clean shutdown on ACPI power-off drains it)";
    }
    step["seconds"] = secs_since(ts);
    steps.push_back(step);
  }
  // 2. The final checkpoint: the standby acknowledges the active's last epoch; the active writes
  // a snapshot. Without a standby in sync, the snapshot alone.
  if (ops.final_checkpoint && !active_addr.empty() && !standby_in_sync) {
    // Nothing to acknowledge a checkpoint: the active's own clean shutdown (ACPI, below) writes
    // its snapshot.
    steps.push_back({{"step", "final_checkpoint"}, {"active", active_addr},
                     {"result", "skipped: no standby in sync (the active's clean shutdown writes its snapshot)"}});
  } else if (ops.final_checkpoint && !active_addr.empty()) {
    Json step{{"step", "final_checkpoint"}, {"active", active_addr}};
    if (!standby_addr.empty()) step["standby"] = standby_addr;
    auto ts = Clock::now();
    Json detail;
    Status st = ops.final_checkpoint(active_addr, t.checkpoint, &detail);
    step["detail"] = detail;
    if (st.ok() && detail.value("snapshot", std::string()).empty()) {
      step["result"] = "acknowledged by the standby, but no snapshot written";
      drain_error = "final checkpoint on " + active_addr + ": the active wrote no snapshot";
    } else if (st.ok()) {
      step["result"] = "acknowledged by the standby, snapshot written";
    } else {
      step["result"] = "failed: " + st.message();
      drain_error = "final checkpoint on " + active_addr + ": " + st.message();
    }
    step["seconds"] = secs_since(ts);
    steps.push_back(step);
  } else if (ops.status) {
    bool any_running = false;
    for (auto &m : members) any_running |= m.state == VIR_DOMAIN_RUNNING;
    // Nothing forwards without an active daemon, so nothing is lost by stopping: reported, not an error.
    if (any_running) steps.push_back({{"step", "final_checkpoint"}, {"result", "skipped: no active daemon answered"}});
  }
  // 3. Standby before active: the active keeps forwarding until the last moment.
  std::stable_sort(members.begin(), members.end(), [&](const Managed &x, const Managed &y) {
    return role_now[x.name] == "standby" && role_now[y.name] != "standby";
  });
  // The VMs: members standby-first, then the spares.
  std::vector<std::string> networks;
  for (auto *group : {&members, &spares})
    for (auto &m : *group) {
      steps.push_back(stop_domain(m, role_now.count(m.name) ? role_now[m.name] : m.meta.role, t.acpi));
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
  // 4. Host resources the pair created.
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
  if (!all_off) return Internal("shutdown: a domain is still running (see the report)");
  if (!drain_error.empty()) return Unavailable("shutdown: every domain is off, but the drain failed: " + drain_error);
  return Status::Ok();
}

Status fence_node(const PairSpec &spec, const std::string &node, const std::string &named, const std::string &action,
                  Ms deadline, Json *report) {
  const NodeSpec *n = spec.node(node);
  if (n == nullptr) return InvalidArgument("fence: node must be a or b, not '" + node + "'");
  // The member for that node may be a former spare with another name.
  std::string domain = named.empty() ? spec.domain_name(node) : named;
  if (named.empty()) {
    Conn conn;
    if (Status st = conn.open(n->uri, deadline); !st.ok()) return with_name("fence", st);
    for (auto &m : list_managed(conn, spec.name))
      if (m.meta.state == "member" && m.meta.node == node) domain = m.name;
  }
  Status st;
  auto fencer = make_libvirt_fencer(n->uri, domain, "", action, &st);
  if (!fencer) return st;
  auto t0 = Clock::now();
  st = fencer->fence(deadline);
  *report = {{"op", "fence"}, {"pair", spec.name}, {"node", node}, {"domain", domain}, {"action", action},
             {"ok", st.ok()}, {"seconds", secs_since(t0)}};
  if (!st.ok()) (*report)["error"] = st.message();
  return st;
}

}  // namespace ftpair::virt
