#include "virt/fencers.h"

namespace ftpair::virt {

std::unique_ptr<fo::Fencer> make_fencer(const fo::FenceConfig &cfg, Status *st) { return fo::make_fencer(cfg, st); }

}  // namespace ftpair::virt
