#include "virt/pool.h"

#include <openssl/rand.h>

#include <set>

#include "virt/claim.h"
#include "virt/conn.h"
#include "virt/domain.h"
#include "virt/lifecycle.h"
#include "virt/managed.h"

namespace ftpair::virt {

namespace {

uint16_t claim_port(const PairSpec &spec) {
  auto it = spec.config.find("pool.port");
  return it == spec.config.end() ? kClaimPort : static_cast<uint16_t>(std::stoul(it->second));
}

std::string new_token() {
  unsigned char b[16];
  std::string hex;
  if (RAND_bytes(b, sizeof b) != 1) return hex;
  static const char *d = "0123456789abcdef";
  for (unsigned char c : b) hex += {d[c >> 4], d[c & 15]};
  return hex;
}

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

/* Destroys and undefines the failed member's domain (take_failed found it not running, or
 * paused). Returns from when it can open no stream: now, or kNotKnownGone when none was found
 * here (it may live on another host). */
Clock::time_point retire(Managed &old, Json *report) {
  if (!old.dom) return kNotKnownGone;
  virDomainDestroy(old.dom.get());  // a suspended (fenced) domain is still a process
  (*report)["retired"] = {{"domain", old.name}, {"result", virDomainUndefine(old.dom.get()) == 0 ? "undefined" : virt_error()}};
  return Clock::now();
}

}  // namespace

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

Status pool_replace(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                    Json *report) {
  if (spec.node(failed) == nullptr) return InvalidArgument("replace: --failed must be a or b, not '" + failed + "'");
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
    return DeadlineExceeded("replace: " + spare->name + " not running after resume");
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
    const Clock::time_point gone_since = retire(old, report);
    const NodeSpec *n = spec.node(failed);
    const NodeSpec *peer = spec.node(failed == "a" ? "b" : "a");
    std::string port = std::to_string(spec.grpc_port);
    std::string line = assume_line(m.token, failed, n->mgmt_address, peer->mgmt_ip() + ":" + port);
    /* The metadata names the spare as node `failed` before it can run as that node: the
     * survivor's fencer finds its peer by it (failover.libvirt_peer), and a spare claimed but
     * not yet marked would be invisible to it, so a fence would find nothing to stop. */
    if (Status st = set_meta(spare->dom.get(), m); !st.ok()) return with_name("replace: " + spare->name, st);
    if (Status st = claim_spare(ip_of(m.address), claim_port(spec), line, Ms(5000)); !st.ok()) {
      // A refusal: still a spare, back to the pool (destroyed if even that fails). No answer:
      // whether it assumed the node is unknown, so it is destroyed (it stays marked as the node).
      const bool refused = st.message().rfind(kClaimRefused, 0) == 0;
      if (!refused || !set_meta(spare->dom.get(), spare->meta).ok()) virDomainDestroy(spare->dom.get());
      return FailedPrecondition("replace: " + spare->name + " at " + m.address + " refused to assume node " + failed +
                                ": " + st.message());
    }
    (*report)["claimed_s"] = secs_since(t0);
    m.address = n->mgmt_address;
    m.token.clear();
    if (Status st = set_meta(spare->dom.get(), m); !st.ok()) return st;
    Json detail;
    Status st = wait(n->mgmt_ip() + ":" + port, peer->mgmt_ip() + ":" + port, t.sync, gone_since, &detail);
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
  const NodeSpec *n = spec.node(failed);
  if (n == nullptr) return InvalidArgument("replace: --failed must be a or b, not '" + failed + "'");
  Conn conn;
  if (Status st = conn.open(n->uri, t.connect); !st.ok()) return with_name("fresh replace", st);
  Managed old;
  if (Status st = take_failed(conn, spec, failed, &old); !st.ok()) return st;
  Json r;
  const Clock::time_point gone_since = retire(old, &r);  // the name is needed again
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
    const NodeSpec *peer = spec.node(failed == "a" ? "b" : "a");
    std::string port = std::to_string(spec.grpc_port);
    Json detail;
    st = wait(n->mgmt_ip() + ":" + port, peer->mgmt_ip() + ":" + port, t.sync, gone_since, &detail);
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

}  // namespace ftpair::virt
