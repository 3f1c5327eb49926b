/* Allocating and freeing mbufs on the dataplane, with the hand-offs marked for TSan.
 *
 * An mbuf moves between threads through DPDK's lock-free rings: a port's queues (the
 * interface agent's rx and tx mark those) and the mempool's free list (these two). Debian's
 * DPDK is not instrumented, so ThreadSanitizer would see a packet written by one thread and
 * read by another with nothing between them. The marks are keyed by the mbuf's address and
 * compile to nothing without TSan: mbuf_alloc and mbuf_free cost what rte_pktmbuf_alloc and
 * rte_pktmbuf_free cost. Every mbuf the dataplane frees or allocates goes through here. */
#pragma once

#include <rte_mbuf.h>

#include "common/tsan.h"

namespace ftpair::dp {

// rte_pktmbuf_alloc, acquiring the mbuf before its reset writes it.
inline rte_mbuf *mbuf_alloc(rte_mempool *mp) {
  rte_mbuf *m = rte_mbuf_raw_alloc(mp);
  if (m != nullptr) {
    tsan_acquire(m);
    rte_pktmbuf_reset(m);
  }
  return m;
}

// rte_pktmbuf_free of a single-segment packet (the dataplane's), released first.
inline void mbuf_free(rte_mbuf *m) {
  if (m == nullptr) return;
  tsan_release(m);
  rte_pktmbuf_free(m);
}

inline void mbuf_free_bulk(rte_mbuf **ms, unsigned n) {
  for (unsigned i = 0; i < n; i++) tsan_release(ms[i]);
  rte_pktmbuf_free_bulk(ms, n);
}

}  // namespace ftpair::dp
