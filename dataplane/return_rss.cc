#include "dataplane/return_rss.h"

#include <rte_byteorder.h>
#include <rte_thash.h>

namespace ftpair::dp {

std::unique_ptr<ReturnRss> ReturnRss::create(const uint8_t *key, unsigned key_len, const std::vector<uint16_t> &reta,
                                             const std::vector<uint16_t> &queue_worker, std::string *err) {
  if (key == nullptr || key_len < 16) {
    *err = "RSS key of " + std::to_string(key_len) + " bytes: the IPv4 4-tuple hash needs 16";
    return nullptr;
  }
  if (reta.empty() || (reta.size() & (reta.size() - 1)) != 0) {
    *err = "RSS redirection table of " + std::to_string(reta.size()) + " entries: not a power of two";
    return nullptr;
  }
  std::unique_ptr<ReturnRss> r(new ReturnRss());
  r->key_.assign(key, key + key_len);
  r->mask_ = static_cast<uint32_t>(reta.size() - 1);
  r->entry_worker_.resize(reta.size());
  for (size_t i = 0; i < reta.size(); i++) {
    if (reta[i] >= queue_worker.size() || queue_worker[reta[i]] == kNoWorker) {
      *err = "RSS redirection table entry " + std::to_string(i) + " names queue " + std::to_string(reta[i]) +
             ", which no worker polls";
      return nullptr;
    }
    r->entry_worker_[i] = queue_worker[reta[i]];
  }
  for (uint32_t b = 0; b < 256; b++) {
    r->port_lo_[b] = r->hash(0, 0, 0, static_cast<uint16_t>(b));
    r->port_hi_[b] = r->hash(0, 0, 0, static_cast<uint16_t>(b << 8));
  }
  return r;
}

uint32_t ReturnRss::hash(uint32_t src_be, uint32_t dst_be, uint16_t sport, uint16_t dport) const {
  // rte_softrss's input: host-order words, as rte_ipv4_tuple lays them out.
  uint32_t t[3] = {rte_be_to_cpu_32(src_be), rte_be_to_cpu_32(dst_be), uint32_t(sport) << 16 | dport};
  return rte_softrss(t, 3, key_.data());
}

}  // namespace ftpair::dp
