#include "control/spare.h"

#include "common/log.h"
#include "control/daemon.h"
#include "virt/spare_link.h"

namespace ftpair {

namespace {
auto &L = log::component("spare");

bool built_from(const std::string &key) {
  static const char *const kPrefixes[] = {"dpdk.", "ports.", "nat.", "flows.", "arp."};
  for (const char *p : kPrefixes)
    if (key.rfind(p, 0) == 0) return key != "dpdk.file_prefix";  // the EAL keeps the spare's runtime prefix
  return key == "worker.count" || key == "worker.idle_sleep_max_us" || key == "checkpoint.mode" ||
         key == "checkpoint.hold_capacity" || key == "checkpoint.hold_fallback";
}
}  // namespace

std::vector<std::string> dataplane_changes(const Config &running, const Config &next) {
  const auto before = config_fields(running), after = config_fields(next);
  std::vector<std::string> out;
  for (const auto &[k, v] : after) {
    if (!built_from(k)) continue;
    auto it = before.find(k);
    if (it == before.end() || it->second != v) out.push_back(k);
  }
  return out;
}

Status prepare_spare(const Config &cfg, int fd, PreparedSpare *out) {
  Status st;
  out->node = Node::create(cfg, &st);
  if (!out->node) return st;
  if (Status ds = ckpt_self_digest(&out->self_sha); !ds.ok()) L.error("the running binary's digest: {}", ds.str());
  warm_up_grpc();
  L.info("warm spare: dataplane built ({} worker{}, ports {} and {}), waiting for the claimed node's config on fd {}",
         out->node->workers(), out->node->workers() == 1 ? "" : "s", cfg.inside.device, cfg.outside.device, fd);
  return virt::spare_write_line(fd, virt::kSpareReady);
}

Status await_identity(int fd, const Config &running, const std::vector<std::string> &overrides,
                      bool (*keep_waiting)(), Config *next, std::string *path) {
  for (;;) {
    std::string line;
    Status st = virt::spare_read_line(fd, std::chrono::milliseconds(-1), &line, keep_waiting);
    if (!st.ok() && st.code() != Code::INVALID_ARGUMENT) return st;
    if (st.ok()) st = virt::parse_spare_config(line, path);
    if (st.ok()) {
      Config c;
      st = load_config(*path, overrides, &c);
      if (st.ok()) {
        std::string keys;
        for (const auto &k : dataplane_changes(running, c)) keys += (keys.empty() ? "" : ", ") + k;
        if (!keys.empty())
          st = FailedPrecondition("the claimed node's config changes what this spare's dataplane was built with: " + keys);
        else
          *next = std::move(c);
      }
    }
    if (st.ok()) {
      if (Status ws = virt::spare_write_line(fd, virt::kSpareOk); !ws.ok()) return ws;
      L.info("warm spare claimed: node {} (config {})", next->node_id, *path);
      return Status::Ok();
    }
    L.error("warm spare: refused: {}", st.message());
    if (Status ws = virt::spare_write_line(fd, virt::kSpareRefused + st.message()); !ws.ok()) return ws;
  }
}

}  // namespace ftpair
