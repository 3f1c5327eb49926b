#include "virt/fence_libvirt.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "virt/conn.h"

namespace ftpair::virt {

namespace {

using Clock = std::chrono::steady_clock;
using SetStage = std::function<void(std::string)>;

// Fenced means its vCPUs can run no more: shut off or crashed (crashed = the guest panicked
// and libvirt holds it stopped); with suspend, paused also counts.
bool fenced_state(int s, bool suspend) {
  return s == VIR_DOMAIN_SHUTOFF || s == VIR_DOMAIN_CRASHED || (suspend && s == VIR_DOMAIN_PAUSED);
}

// Connect, look up, stop, confirm; on the caller's worker thread, reporting each stage.
Status stop_domain(const std::string &uri, const std::string &domain, bool suspend, Clock::time_point end,
                   const SetStage &set_stage) {
  // The caller's wait ends at `end` and reports the stage it was in; the open gets a second
  // more, so that it is the caller's deadline that a silent libvirt runs into.
  Conn conn;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
  if (Status st = conn.open(uri, std::max(left, std::chrono::milliseconds(0)) + std::chrono::seconds(1)); !st.ok())
    return Status(st.code(), "fence: " + st.message());
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
  set_stage(std::string(suspend ? "suspending" : "destroying") + " domain " + domain);
  int rc = suspend ? virDomainSuspend(dom.get()) : virDomainDestroy(dom.get());
  std::string action_error = rc < 0 ? virt_error() : "";
  set_stage("confirming domain " + domain + " stopped");
  for (;;) {
    int state = VIR_DOMAIN_NOSTATE, reason = 0;
    if (virDomainGetState(dom.get(), &state, &reason, 0) == 0) {
      if (fenced_state(state, suspend)) return Status::Ok();
    } else if (virErrorPtr e = virGetLastError(); e != nullptr && e->code == VIR_ERR_NO_DOMAIN) {
      return Status::Ok();  // gone: a transient domain is undefined once it stops, nothing runs under it
    }
    if (Clock::now() > end)
      return DeadlineExceeded("fence: domain " + domain + " is still " + state_name(state) +
                              (action_error.empty() ? "" : " (" + action_error + ")"));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

/* libvirt calls block (a remote URI over a dead link can hang in connect), so the work runs on
 * a worker thread and fence() stops waiting at the deadline. A worker that outlives its caller
 * finishes on its own and frees what it holds. */
class LibvirtFencer final : public fo::Fencer {
 public:
  LibvirtFencer(std::string uri, std::string domain, bool suspend)
      : uri_(std::move(uri)), domain_(std::move(domain)), suspend_(suspend) {}
  const char *kind() const override { return "libvirt"; }
  std::string target() const override {
    return "domain " + domain_ + " at " + uri_ + (suspend_ ? " (suspend)" : " (destroy)");
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
    std::thread([sh, end, uri = uri_, domain = domain_, suspend = suspend_] {
      SetStage set_stage = [&](std::string s) {
        std::lock_guard<std::mutex> l(sh->mu);
        sh->stage = std::move(s);
      };
      Status st = stop_domain(uri, domain, suspend, end, set_stage);
      std::lock_guard<std::mutex> l(sh->mu);
      sh->result = std::move(st);
      sh->done = true;
      sh->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> l(sh->mu);
    if (!sh->cv.wait_until(l, end, [&] { return sh->done; }))
      return DeadlineExceeded("fence: libvirt domain " + domain_ + " not confirmed stopped within " +
                              std::to_string(deadline.count()) + " ms (still " + sh->stage + ")");
    return sh->result;
  }

 private:
  std::string uri_, domain_;
  bool suspend_;
};

}  // namespace

std::unique_ptr<fo::Fencer> make_libvirt_fencer(const std::string &uri, const std::string &domain,
                                                const std::string &action, Status *st) {
  if (uri.empty() || domain.empty()) {
    *st = InvalidArgument("failover.libvirt_uri and failover.libvirt_domain: required with fence 'libvirt'");
    return nullptr;
  }
  if (action != "destroy" && action != "suspend") {
    *st = InvalidArgument("failover.libvirt_action: '" + action + "' is not destroy or suspend");
    return nullptr;
  }
  return std::make_unique<LibvirtFencer>(uri, domain, action == "suspend");
}

}  // namespace ftpair::virt
