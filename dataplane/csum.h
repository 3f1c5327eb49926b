/* Incremental Internet checksum update (RFC 1624: HC' = ~(~HC + ~m + m')).
 * All values in the same byte order as they sit in the packet. */
#pragma once

#include <cstdint>

namespace ftpair::dp {

/* The one's-complement sum of s's two halves, end-around carry included: the high half of
 * s + (s rotated by 16) is H + L plus the carry out of the low half's L + H. A rotate, an add
 * and a shift, the same value as folding twice for every s (checked for all 2^32 once, and
 * sampled by test_csum). */
inline uint16_t csum_fold(uint32_t s) {
  return static_cast<uint16_t>((s + ((s << 16) | (s >> 16))) >> 16);
}

// a + b in one's complement over 32 bits: the carry out of the add goes back in (an adc).
inline uint32_t csum_add32(uint32_t a, uint32_t b) {
  const uint32_t s = a + b;
  return s + (s < b);
}

inline uint16_t csum_update16(uint16_t csum, uint16_t from, uint16_t to) {
  uint32_t s = static_cast<uint16_t>(~csum);
  s += static_cast<uint16_t>(~from);
  s += to;
  return static_cast<uint16_t>(~csum_fold(s));
}

inline uint16_t csum_update32(uint16_t csum, uint32_t from, uint32_t to) {
  uint32_t s = static_cast<uint16_t>(~csum);
  s += static_cast<uint16_t>(~from) + static_cast<uint16_t>(~(from >> 16));
  s += (to & 0xffff) + (to >> 16);
  return static_cast<uint16_t>(~csum_fold(s));
}

}  // namespace ftpair::dp
