/* Predictable RSS for the NAT's return traffic: which worker's queue a WAN packet to a NAT
 * port lands on, so that the NAT can pick, for a new flow, a port whose replies the NIC
 * delivers to the worker that owns the flow (DPDK's Toeplitz hash library, rte_thash, and
 * its SNAT example). Where the outside port's RSS key and redirection table (RETA) can be
 * programmed, no reply of such a flow needs a hand-off.
 *
 * The NIC hashes a non-fragmented IPv4 TCP or UDP packet with the Toeplitz function over
 * (source address, destination address, source port, destination port) and takes the RETA
 * entry at the hash's low bits. For a reply to a NAT flow that is (remote address, NAT
 * address, remote port, NAT port). Toeplitz is linear over GF(2) in its input, so
 *   hash(remote, nat, rport, nport) = hash(remote, nat, rport, 0) ^ hash(0, 0, 0, nport),
 * and the second term is two 256-entry tables: the port scan pays three loads and two XORs a
 * candidate. Both terms come from rte_softrss, the hash the NIC computes, with its key.
 *
 * Not steered: ICMP (its identifier is not in an IPv4 RSS input), fragments (hashed on the
 * addresses alone), and replies from another endpoint to an endpoint-independent mapping
 * (another input). Those are handed off as before (ftpair_worker_handoffs_total).
 *
 * Threading: read-only once made; every worker may use one. */
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ftpair::dp {

class ReturnRss {
 public:
  static constexpr uint16_t kNoWorker = 0xffff;  // queue_worker's entry for a queue no worker polls
  /* key: the outside port's RSS key as the NIC takes it (key_len bytes, at least 16: the
   * hash of 12 input bytes reads 16). reta: the queue of each RETA entry (a power of two
   * entries). queue_worker: the worker that polls each queue (queue q -> queue_worker[q],
   * kNoWorker for none); every entry must name a polled queue.
   * nullptr and *err when they do not fit together. */
  static std::unique_ptr<ReturnRss> create(const uint8_t *key, unsigned key_len, const std::vector<uint16_t> &reta,
                                           const std::vector<uint16_t> &queue_worker, std::string *err);

  // The RSS hash of a packet src:sport -> dst:dport (addresses network order, ports host order).
  uint32_t hash(uint32_t src_be, uint32_t dst_be, uint16_t sport, uint16_t dport) const;
  // The hash of a reply from remote:rport to nat_ip, without the NAT port's part.
  uint32_t base(uint32_t remote_be, uint32_t nat_be, uint16_t rport) const { return hash(remote_be, nat_be, rport, 0); }
  // The worker whose queue a reply lands on, with that NAT port (host order).
  unsigned worker(uint32_t base, uint16_t nat_port) const {
    return entry_worker_[(base ^ port_lo_[nat_port & 0xff] ^ port_hi_[nat_port >> 8]) & mask_];
  }
  // The worker of a RETA entry, and the number of entries.
  unsigned entry_worker(unsigned i) const { return entry_worker_[i]; }
  unsigned entries() const { return mask_ + 1; }

 private:
  ReturnRss() = default;
  std::vector<uint8_t> key_;
  uint32_t mask_ = 0;
  std::vector<uint16_t> entry_worker_;  // RETA entry -> worker
  uint32_t port_lo_[256] = {}, port_hi_[256] = {};
};

}  // namespace ftpair::dp
