/* TCP connection tracking for the NAT: the state machine (simultaneous open included,
 * RFC 5382 REQ-2), RST accepted only inside the window (RFC 5961 style), out-of-window
 * segments counted, and MSS clamping to the path's MTU. */
#include <cstring>

#include <rte_byteorder.h>
#include <rte_tcp.h>

#include "dataplane/csum.h"
#include "dataplane/nf.h"
#include "dataplane/nf_parsed.h"

namespace ftpair::dp {

namespace {
constexpr uint8_t kTcpFin = RTE_TCP_FIN_FLAG, kTcpSyn = RTE_TCP_SYN_FLAG,
                  kTcpRst = RTE_TCP_RST_FLAG, kTcpAck = RTE_TCP_ACK_FLAG;
constexpr uint8_t kOptEnd = 0, kOptNop = 1, kOptMss = 2, kOptWscale = 3;

inline bool seq_after(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

// ceil(log2(v)), at least 1 so that 0 keeps meaning "side not seen".
inline uint8_t win_log(uint64_t v) {
  unsigned l = v <= 1 ? 1 : 64 - static_cast<unsigned>(__builtin_clzll(v - 1));
  return static_cast<uint8_t>(l < 1 ? 1 : l > 31 ? 31 : l);
}

// The window-scale option of a SYN, or kWscaleNone.
uint8_t syn_wscale(const rte_tcp_hdr *tcp) {
  const uint8_t *o = reinterpret_cast<const uint8_t *>(tcp + 1);
  const uint8_t *end = reinterpret_cast<const uint8_t *>(tcp) + (tcp->data_off >> 4) * 4u;
  while (o < end) {
    if (*o == kOptEnd) break;
    if (*o == kOptNop) {
      o++;
      continue;
    }
    if (o + 1 >= end || o[1] < 2 || o + o[1] > end) break;
    if (*o == kOptWscale && o[1] == 3) return o[2] > 14 ? 14 : o[2];
    o += o[1];
  }
  return kWscaleNone;
}
}  // namespace

/* Lowers the MSS option of a SYN to what the smaller MTU of the two sides carries, so
 * neither end sends segments the other side's link would have to drop (DF) or fragment. */
void Nat44::clamp_mss(Parsed &p) {
  auto *tcp = reinterpret_cast<rte_tcp_hdr *>(p.l4);
  uint8_t *o = reinterpret_cast<uint8_t *>(tcp + 1);
  uint8_t *end = reinterpret_cast<uint8_t *>(tcp) + (tcp->data_off >> 4) * 4u;
  while (o < end) {
    if (*o == kOptEnd) return;
    if (*o == kOptNop) {
      o++;
      continue;
    }
    if (o + 1 >= end || o[1] < 2 || o + o[1] > end) return;
    if (*o == kOptMss && o[1] == 4) {
      uint16_t mss_be;
      std::memcpy(&mss_be, o + 2, 2);
      if (rte_be_to_cpu_16(mss_be) <= mss_max_) return;
      const uint16_t new_be = rte_cpu_to_be_16(mss_max_);
      // The option's offset in the header may be odd: update the checksum over the two
      // 16-bit words it straddles then, as they sit in the packet.
      const size_t off = static_cast<size_t>(o + 2 - reinterpret_cast<uint8_t *>(tcp));
      if (off % 2 == 0) {
        tcp->cksum = csum_update16(tcp->cksum, mss_be, new_be);
        std::memcpy(o + 2, &new_be, 2);
      } else {
        uint8_t *w = o + 1;  // word-aligned start: [w0 w1][w2 w3] covers o[1..4]
        uint16_t before[2], after[2];
        std::memcpy(before, w, 4);
        std::memcpy(o + 2, &new_be, 2);
        std::memcpy(after, w, 4);
        tcp->cksum = csum_update16(csum_update16(tcp->cksum, before[0], after[0]), before[1], after[1]);
      }
      bump(ctr_.mss_clamped);
      return;
    }
    o += o[1];
  }
}

/* The state machine, per side (0 initiator, 1 responder). A RST is honoured only when
 * its sequence number lies in the window the other side advertised around the highest
 * sequence this side has sent (RFC 5961 §3 as a middlebox can check it), or, answering a
 * SYN, when it acknowledges the SYN. The window fields are replicated state, so every
 * change goes through touch(); to keep a busy connection from being dirty in every epoch,
 * the highest sequence is only moved on once it is a quarter of the window ahead (the
 * checks allow for that lag). A side not seen yet (or a standby's copy that traffic
 * overtook after a failover) is picked up from traffic. */
DropReason Nat44::track_tcp(uint32_t slot, FlowRecord &r, const Parsed &p, bool from_inside,
                            uint8_t *new_state, uint8_t *new_flags) {
  FlowState &st = r.st;
  const auto *tcp = reinterpret_cast<const rte_tcp_hdr *>(p.l4);
  const uint8_t f = p.tcp_flags;
  const bool resp_inside = st.flags & (kFlowPortForward | kFlowInbound);
  const unsigned side = from_inside == resp_inside ? 1 : 0;
  const bool from_init = side == 0;
  auto state = static_cast<TcpState>(st.tcp_state);
  uint8_t flags = st.flags;
  TcpState next = state;

  const uint32_t seq = rte_be_to_cpu_32(tcp->sent_seq);
  const uint32_t hdr = (tcp->data_off >> 4) * 4u;
  const uint32_t len = p.l4_len - hdr + ((f & kTcpSyn) ? 1 : 0) + ((f & kTcpFin) ? 1 : 0);
  const uint32_t end = seq + len;
  const unsigned other = 1 - side;
  const bool known = st.tcp_win_log[side] != 0, other_known = st.tcp_win_log[other] != 0;
  // The receiver's window bounds how far around this side's highest sequence a valid
  // segment may lie (at least 64 KiB: the unscaled maximum).
  const uint32_t win = other_known ? (1u << st.tcp_win_log[other]) : 0;
  const uint32_t slack = win > 65535 ? win : 65535;
  const uint32_t lag = slack / 4;  // how far the stored highest sequence may trail

  if (f & kTcpRst) {
    bool ok;
    if (state == TcpState::SYN_SENT && !from_init) {
      // Refusing the SYN: must acknowledge it.
      ok = (f & kTcpAck) && st.tcp_win_log[0] && rte_be_to_cpu_32(tcp->recv_ack) == st.tcp_end[0];
    } else if (!known) {
      ok = true;
    } else {
      ok = !seq_after(seq, st.tcp_end[side] + slack + lag) && !seq_after(st.tcp_end[side] - slack, seq);
    }
    if (!ok) {
      bump(ctr_.tcp_rst_ignored);
      if (!cfg_.tcp_liberal) return DropReason::TCP_OUT_OF_WINDOW;
      *new_state = st.tcp_state;
      *new_flags = flags;
      return DropReason::COUNT;  // forwarded (the endpoint checks it too), not honoured
    }
    next = TcpState::CLOSED;
  } else {
    switch (state) {
      case TcpState::NONE:
      case TcpState::SYN_SENT:
        if (from_init) {
          if (!(f & kTcpSyn) || (f & kTcpAck)) return DropReason::TCP_INVALID;
          next = TcpState::SYN_SENT;
        } else {
          // A SYN+ACK answers; a bare SYN is a simultaneous open (RFC 5382 REQ-2).
          if (!(f & kTcpSyn)) return DropReason::TCP_INVALID;
          next = TcpState::SYN_RECV;
        }
        break;
      case TcpState::SYN_RECV:
        // The handshake's last ACK (from either side after a simultaneous open).
        if ((f & kTcpAck) && !(f & kTcpSyn)) next = TcpState::ESTABLISHED;
        break;
      case TcpState::ESTABLISHED:
      case TcpState::FIN_WAIT:
        break;
      case TcpState::TIME_WAIT:
      case TcpState::CLOSED:
        if (from_init && (f & kTcpSyn) && !(f & kTcpAck)) {
          next = TcpState::SYN_SENT;  // the tuple is reused by a new connection
          flags &= static_cast<uint8_t>(~(kFlowFinFromInside | kFlowFinFromOutside | kFlowReplied));
          flows_.touch(slot);
          std::memset(st.tcp_win_log, 0, sizeof(st.tcp_win_log));
          st.tcp_wscale = 0xff;
        } else if (state == TcpState::CLOSED) {
          return DropReason::TCP_INVALID;
        }
        break;
    }
    // The window check, once both sides are known.
    if (known && other_known && !(f & kTcpSyn) &&
        (seq_after(seq, st.tcp_end[side] + slack + lag) || seq_after(st.tcp_end[side] - slack, end))) {
      bump(ctr_.tcp_out_of_window);
      if (!cfg_.tcp_liberal) return DropReason::TCP_OUT_OF_WINDOW;
      flows_.touch(slot);
      st.tcp_end[side] = end;  // liberal: pick the stream up where it is
    }
    if ((f & kTcpFin) && (next == TcpState::ESTABLISHED || next == TcpState::FIN_WAIT ||
                          next == TcpState::SYN_RECV)) {
      flags |= from_inside ? kFlowFinFromInside : kFlowFinFromOutside;
      bool both = (flags & kFlowFinFromInside) && (flags & kFlowFinFromOutside);
      next = both ? TcpState::TIME_WAIT : TcpState::FIN_WAIT;
    }
  }
  // Window bookkeeping for this side; each write touches the record first.
  if (f & kTcpSyn) {
    const uint8_t ws = syn_wscale(tcp);
    const uint8_t wscale = static_cast<uint8_t>(side == 0 ? (st.tcp_wscale & 0xf0) | ws
                                                         : (st.tcp_wscale & 0x0f) | (ws << 4));
    if (wscale != st.tcp_wscale) {
      flows_.touch(slot);
      st.tcp_wscale = wscale;
    }
  }
  if (!known || (f & kTcpSyn) ? end != st.tcp_end[side] : seq_after(end, st.tcp_end[side] + lag)) {
    flows_.touch(slot);
    st.tcp_end[side] = end;
  }
  const uint8_t ws_init = st.tcp_wscale & 0xf, ws_resp = st.tcp_wscale >> 4;
  const bool scaled = !(f & kTcpSyn) && ws_init != kWscaleNone && ws_resp != kWscaleNone;
  const uint64_t w = uint64_t(rte_be_to_cpu_16(tcp->rx_win)) << (scaled ? (side ? ws_resp : ws_init) : 0);
  const uint8_t lw = win_log(w);
  if (lw > st.tcp_win_log[side]) {
    flows_.touch(slot);
    st.tcp_win_log[side] = lw;
  }

  if (!from_init) flags |= kFlowReplied;
  *new_state = static_cast<uint8_t>(next);
  *new_flags = flags;
  return DropReason::COUNT;
}

}  // namespace ftpair::dp
