#include "virt/fencers.h"

#include "virt/fence_libvirt.h"
#include "virt/fence_process.h"

namespace ftpair::virt {

std::unique_ptr<fo::Fencer> make_fencer(const fo::FenceConfig &cfg, Status *st) {
  switch (cfg.kind) {
    case fo::FenceKind::NONE: return fo::make_none_fencer(cfg, st);
    case fo::FenceKind::PROCESS: return make_process_fencer(cfg.pidfile, cfg.missing_pidfile_ok, st);
    case fo::FenceKind::LIBVIRT: return make_libvirt_fencer(cfg.libvirt_uri, cfg.domain, cfg.libvirt_peer, cfg.libvirt_action, st);
  }
  *st = InvalidArgument(std::string("failover.fence: '") + fo::fence_kind_name(cfg.kind) +
                        "' is not none, process or libvirt");
  return nullptr;
}

}  // namespace ftpair::virt
