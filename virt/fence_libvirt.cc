#include "virt/fence_libvirt.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "virt/conn.h"
#include "virt/meta.h"

namespace ftpair::virt {

namespace {

using Clock = std::chrono::steady_clock;
using SetStage = std::function<void(std::string)>;

// Fenced means its vCPUs can run no more: shut off or crashed (crashed = the guest panicked
// and libvirt holds it stopped); with suspend, paused also counts.
bool fenced_state(int s, bool suspend) {
  return s == VIR_DOMAIN_SHUTOFF || s == VIR_DOMAIN_CRASHED || (suspend && s == VIR_DOMAIN_PAUSED);
}

// Stops one domain and confirms it, by `end`.
Status stop_one(virDomainPtr dom, const std::string &name, bool suspend, Clock::time_point end,
                const SetStage &set_stage) {
  set_stage(std::string(suspend ? "suspending" : "destroying") + " domain " + name);
  int rc = suspend ? virDomainSuspend(dom) : virDomainDestroy(dom);
  std::string action_error = rc < 0 ? virt_error() : "";
  set_stage("confirming domain " + name + " stopped");
  for (;;) {
    int state = VIR_DOMAIN_NOSTATE, reason = 0;
    if (virDomainGetState(dom, &state, &reason, 0) == 0) {
      if (fenced_state(state, suspend)) return Status::Ok();
    } else if (virErrorPtr e = virGetLastError(); e != nullptr && e->code == VIR_ERR_NO_DOMAIN) {
      return Status::Ok();  // gone: a transient domain is undefined once it stops, nothing runs under it
    }
    if (Clock::now() > end)
      return DeadlineExceeded("fence: domain " + name + " is still " + state_name(state) +
                              (action_error.empty() ? "" : " (" + action_error + ")"));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

/* The domains that are node `ref.node` of pair `ref.pair` by their ftpair metadata (members,
 * and retained ones; never a spare, whose node is its own). Any failure to read a domain's
 * metadata other than "it has none" or "it is gone" leaves the peer unknown: UNAVAILABLE. */
Status find_peer(virConnectPtr conn, const PeerRef &ref, const std::string &uri, std::vector<Dom> *out,
                 std::vector<std::string> *names) {
  virDomainPtr *doms = nullptr;
  const int n = virConnectListAllDomains(conn, &doms, 0);
  if (n < 0) return Unavailable("fence: listing the domains at " + uri + " failed: " + virt_error());
  std::vector<Dom> all;
  for (int i = 0; i < n; ++i) all.emplace_back(doms[i]);
  free(doms);
  for (Dom &d : all) {
    char *x = virDomainGetMetadata(d.get(), VIR_DOMAIN_METADATA_ELEMENT, kMetaNs, VIR_DOMAIN_AFFECT_CURRENT);
    if (x == nullptr) {
      virErrorPtr e = virGetLastError();
      if (e != nullptr && (e->code == VIR_ERR_NO_DOMAIN_METADATA || e->code == VIR_ERR_NO_DOMAIN)) continue;
      const std::string why = virt_error();  // before another call resets libvirt's last error
      const char *name = virDomainGetName(d.get());
      return Unavailable(std::string("fence: reading the metadata of domain ") + (name ? name : "?") + " at " + uri +
                         " failed: " + why);
    }
    InstanceMeta m;
    const bool ours = parse_meta_xml(x, &m);
    free(x);
    // Our namespace but not an element we can read: which node it is is unknown, so the peer is.
    if (!ours) {
      const char *name = virDomainGetName(d.get());
      return Unavailable(std::string("fence: domain ") + (name ? name : "?") + " at " + uri +
                         " carries ftpair metadata that does not parse: its node is unknown");
    }
    if (m.pair != ref.pair || m.node != ref.node || m.state == "spare") continue;
    names->push_back(virDomainGetName(d.get()));
    out->push_back(std::move(d));
  }
  return Status::Ok();
}

/* Connect, look up (by name, or by metadata when `peer` is set), stop, confirm; on the
 * caller's worker thread, reporting each stage. */
Status stop_domain(const std::string &uri, const std::string &domain, const PeerRef &peer, bool suspend,
                   Clock::time_point end, const SetStage &set_stage) {
  // The caller's wait ends at `end` and reports the stage it was in; the open gets a second
  // more, so that it is the caller's deadline that a silent libvirt runs into.
  Conn conn;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
  if (Status st = conn.open(uri, std::max(left, std::chrono::milliseconds(0)) + std::chrono::seconds(1)); !st.ok())
    return Status(st.code(), "fence: " + st.message());
  if (!peer.pair.empty()) {
    set_stage("looking up node " + peer.node + " of pair " + peer.pair);
    std::vector<Dom> doms;
    std::vector<std::string> names;
    if (Status st = find_peer(conn.get(), peer, uri, &doms, &names); !st.ok()) return st;
    // None: no domain is that node (a replaced one is undefined), so nothing runs as it.
    for (size_t i = 0; i < doms.size(); ++i)
      if (Status st = stop_one(doms[i].get(), names[i], suspend, end, set_stage); !st.ok()) return st;
    return Status::Ok();
  }
  set_stage("looking up domain " + domain);
  Dom dom(virDomainLookupByName(conn.get(), domain.c_str()));
  if (!dom) {
    virErrorPtr e = virGetLastError();
    // Only a definite "no such domain" means nothing can run under that name; any other
    // failure (connection lost, permission) leaves the peer's state unknown.
    if (e == nullptr || e->code != VIR_ERR_NO_DOMAIN)
      return Unavailable("fence: lookup of domain " + domain + " at " + uri + " failed: " + virt_error());
    return Status::Ok();
  }
  return stop_one(dom.get(), domain, suspend, end, set_stage);
}

/* libvirt calls block (a remote URI over a dead link can hang in connect), so the work runs on
 * a worker thread and fence() stops waiting at the deadline. A worker that outlives its caller
 * finishes on its own and frees what it holds. */
class LibvirtFencer final : public fo::Fencer {
 public:
  LibvirtFencer(std::string uri, std::string domain, PeerRef peer, bool suspend)
      : uri_(std::move(uri)), domain_(std::move(domain)), peer_(std::move(peer)), suspend_(suspend) {}
  const char *kind() const override { return "libvirt"; }
  std::string target() const override {
    return what() + " at " + uri_ + (suspend_ ? " (suspend)" : " (destroy)");
  }

 protected:
  Status stop_peer(std::chrono::milliseconds deadline) override {
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      Status result;
      std::string stage;
    };
    auto sh = std::make_shared<Shared>();
    sh->stage = "connecting to " + uri_;
    auto end = Clock::now() + deadline;
    std::thread([sh, end, uri = uri_, domain = domain_, peer = peer_, suspend = suspend_] {
      SetStage set_stage = [&](std::string s) {
        std::lock_guard<std::mutex> l(sh->mu);
        sh->stage = std::move(s);
      };
      Status st = stop_domain(uri, domain, peer, suspend, end, set_stage);
      std::lock_guard<std::mutex> l(sh->mu);
      sh->result = std::move(st);
      sh->done = true;
      sh->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> l(sh->mu);
    if (!sh->cv.wait_until(l, end, [&] { return sh->done; }))
      return DeadlineExceeded("fence: libvirt " + what() + " not confirmed stopped within " +
                              std::to_string(deadline.count()) + " ms (still " + sh->stage + ")");
    return sh->result;
  }

 private:
  std::string what() const {
    return peer_.pair.empty() ? "domain " + domain_ : "node " + peer_.node + " of pair " + peer_.pair;
  }
  std::string uri_, domain_;
  PeerRef peer_;
  bool suspend_;
};

}  // namespace

std::unique_ptr<fo::Fencer> make_libvirt_fencer(const std::string &uri, const std::string &domain,
                                                const std::string &peer, const std::string &action, Status *st) {
  if (uri.empty() || (domain.empty() && peer.empty())) {
    *st = InvalidArgument(uri.empty() ? "failover.libvirt_uri: required with fence 'libvirt'"
                                      : "failover.libvirt_domain or failover.libvirt_peer: one is required with fence 'libvirt'");
    return nullptr;
  }
  if (!domain.empty() && !peer.empty()) {
    *st = InvalidArgument("failover.libvirt_domain and failover.libvirt_peer: set one, not both");
    return nullptr;
  }
  PeerRef ref;
  if (!peer.empty() && !fo::parse_peer_ref(peer, &ref)) {
    *st = InvalidArgument("failover.libvirt_peer: '" + peer + "' is not PAIR/NODE");
    return nullptr;
  }
  if (action != "destroy" && action != "suspend") {
    *st = InvalidArgument("failover.libvirt_action: '" + action + "' is not destroy or suspend");
    return nullptr;
  }
  return std::make_unique<LibvirtFencer>(uri, domain, ref, action == "suspend");
}

}  // namespace ftpair::virt
