/* Dataplane beats (issue 19): liveness frames that the workers themselves send and receive.
 *
 * Every worker of each node sends one small Ethernet frame every interval on the LAN port,
 * which both nodes share. Source: the node's own MAC, never the virtual one (a learning bridge
 * must not move the virtual MAC to the standby's port). Destination: the peer's own MAC once an
 * authentic beat taught it, broadcast before that and whenever the peer has gone silent (a
 * replaced peer has a new MAC). EtherType 0x88B5 (IEEE local experimental).
 *
 * The peer's workers take the frames off in the classify stage (a branch on the EtherType of
 * a non-IPv4 frame, so IPv4 packets pay nothing), verify them, and publish the newest sequence
 * and arrival time per peer worker here, where a real-time thread of the control plane reads
 * them. A worker that stalls stops sending, so node death and a worker stall are one signal,
 * seen within microseconds of the deadline: no scheduler, no socket, no management network.
 *
 * Frame (after the 14-byte Ethernet header; integers big-endian), 76 bytes:
 *   "FTDB" | version 1 | key id | role | worker | workers | flags | 0 0
 *   | node id (16, NUL-padded) | generation (8) | boot nonce (8) | sequence (8)
 *   | sent unix ns (8) | tag (16)
 * The tag is the first 16 bytes of HMAC-SHA256(key, every byte from "FTDB" to the send time).
 * Key id 0 and a zero tag: unauthenticated (only accepted where no key is configured).
 *
 * Replays: the sender draws a random boot nonce; within a nonce each worker's sequence must
 * grow. A new nonce (the peer restarted) is taken only with a send time newer than every beat
 * accepted so far (as for the UDP beats, failover/beat_auth.h).
 *
 * Threads: make() runs on the sending worker (each worker its own slot); receive() on any
 * worker (a mutex serialises the replay state: one frame per peer worker and interval); the
 * rest on control threads. */
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <rte_ether.h>
#include <rte_mempool.h>

#include "dataplane/agent.h"

struct rte_mbuf;

namespace ftpair::dp {

inline constexpr uint16_t kDpBeatEtherType = 0x88B5;
inline constexpr size_t kDpBeatNodeIdBytes = 16;
inline constexpr size_t kDpBeatSigned = 60;  // "FTDB" .. sent unix ns
inline constexpr size_t kDpBeatTag = 16;
inline constexpr size_t kDpBeatPayload = kDpBeatSigned + kDpBeatTag;
inline constexpr size_t kDpBeatFrame = sizeof(rte_ether_hdr) + kDpBeatPayload;

// Why a dataplane beat was ignored.
enum class DpBeatReject : uint8_t {
  SHORT,            // fewer bytes than a beat
  BAD_MAGIC,
  BAD_VERSION,
  BAD_FIELD,        // a worker number out of range, no workers, a node id not NUL-padded
  OWN,              // this node's own beat (a loop in the network)
  UNAUTHENTICATED,  // key id 0 where keys are configured
  UNKNOWN_KEY,
  BAD_MAC,
  REPLAY,           // a sequence number not newer than the worker's last
  STALE_BOOT,       // a new boot nonce with a send time older than beats already accepted
  COUNT
};
const char *dp_beat_reject_label(DpBeatReject r);

struct DpBeatKey {
  DpBeatKey() = default;
  DpBeatKey(uint8_t key_id, std::string key) : id(key_id), secret(std::move(key)) {}
  uint8_t id = 0;
  std::string secret;
  /* HMAC-SHA256's inner and outer hash states after the key's block, computed once by
   * prepare() (the board prepares its keys): a tag then costs three SHA-256 blocks instead of
   * HMAC()'s set-up. Empty: computed for each tag. */
  std::vector<uint8_t> hmac_state;
  void prepare();
};

// A beat's fields.
struct DpBeat {
  uint8_t key_id = 0, role = 0, worker = 0, workers = 1, flags = 0;
  char node[kDpBeatNodeIdBytes] = {};
  uint64_t generation = 0, nonce = 0, sequence = 0;
  int64_t sent_unix_ns = 0;
  std::string node_id() const;
};

/* Writes the beat's payload (kDpBeatPayload bytes, no Ethernet header) to out, signed with key
 * (nullptr: unauthenticated, key id 0 and a zero tag). */
void dp_beat_encode(const DpBeat &b, const DpBeatKey *key, uint8_t *out);
/* Checks a payload (after the Ethernet header): framing, fields, and the tag against keys
 * (empty: only unauthenticated beats are taken, and a tagged one is checked by nothing but its
 * framing). COUNT when it is well formed and authentic; no replay check here. */
DpBeatReject dp_beat_decode(const uint8_t *p, size_t n, const std::vector<DpBeatKey> &keys, DpBeat *out);

struct DpBeatConfig {
  std::string node_id;          // at most 16 bytes
  uint32_t interval_us = 1000;  // every worker sends one beat per interval
  uint32_t miss = 3;            // a peer worker silent this many intervals is missed
  unsigned workers = 1;
  std::vector<DpBeatKey> keys;  // keys[0] signs; empty: unauthenticated
  rte_ether_addr src_mac{};     // the LAN port's own MAC
  uint64_t nonce = 0;           // 0: drawn at random
  uint64_t tsc_hz = 0;          // the workers' clock
};

// TSC ticks to microseconds without overflow (a silence of hours stays right).
inline uint64_t tsc_to_us(uint64_t ticks, uint64_t hz) {
  return hz == 0 ? 0 : ticks / hz * 1'000'000 + ticks % hz * 1'000'000 / hz;
}

// What the control plane reads about the peer, at one moment.
struct DpPeerView {
  bool heard = false;        // an authentic beat since start
  uint8_t role = 0;          // as the peer's newest beat says
  unsigned workers = 0;      // the peer's worker count
  uint64_t generation = 0;
  std::string node_id;
  uint64_t silence_tsc[kMaxWorkers] = {};  // since each peer worker's newest beat
  uint64_t sequence[kMaxWorkers] = {};
  unsigned worst = 0;        // the worker silent the longest
};

class DpBeatBoard {
 public:
  explicit DpBeatBoard(DpBeatConfig cfg);
  ~DpBeatBoard();
  DpBeatBoard(const DpBeatBoard &) = delete;
  DpBeatBoard &operator=(const DpBeatBoard &) = delete;

  const DpBeatConfig &config() const { return cfg_; }
  uint64_t interval_tsc() const { return interval_tsc_; }
  uint64_t silence_limit_tsc() const { return interval_tsc_ * cfg_.miss; }

  // --- the workers
  /* The next beat of `worker` as a frame from pool, stamped now (nullptr when the pool is
   * empty: counted). The caller sends it with the agent's tx and no epoch dependency. */
  rte_mbuf *make(unsigned worker, rte_mempool *pool, uint64_t now_tsc);
  // A received frame (Ethernet header included): verified, and recorded when authentic and new.
  void receive(const uint8_t *frame, size_t n, uint64_t now_tsc);

  // --- the control plane
  // This node's role and generation as the beats carry them (set on every change, or often).
  void set_local(uint8_t role, uint64_t generation) {
    role_.store(role, std::memory_order_relaxed);
    generation_.store(generation, std::memory_order_relaxed);
  }
  void set_keys(std::vector<DpBeatKey> keys);
  DpPeerView peer(uint64_t now_tsc) const;
  uint64_t sent(unsigned w) const { return tx_[w].sent.load(std::memory_order_relaxed); }
  uint64_t last_sent_tsc(unsigned w) const { return tx_[w].last_tsc.load(std::memory_order_relaxed); }
  uint64_t sent_total() const;
  uint64_t heard() const { return heard_.load(std::memory_order_relaxed); }
  uint64_t no_mbuf() const { return no_mbuf_.load(std::memory_order_relaxed); }
  uint64_t rejected(DpBeatReject r) const { return rejected_[static_cast<size_t>(r)].load(std::memory_order_relaxed); }
  bool authenticated() const { return !cfg_.keys.empty(); }
  uint64_t nonce() const { return nonce_; }

 private:
  struct alignas(64) TxSlot {
    std::atomic<uint64_t> seq{0}, sent{0}, last_tsc{0};
  };
  struct alignas(64) PeerSlot {
    std::atomic<uint64_t> heard_tsc{0}, seq{0};
  };
  void reject(DpBeatReject r) { rejected_[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed); }

  DpBeatConfig cfg_;
  uint64_t interval_tsc_;
  uint64_t nonce_;
  std::atomic<uint8_t> role_{0};
  std::atomic<uint64_t> generation_{0};
  TxSlot tx_[kMaxWorkers];
  PeerSlot peer_[kMaxWorkers];
  /* No worker ever waits for a control thread: a control thread preempted while holding a lock
   * the worker needs would silence the worker's beats, and the peer would see a stall that is
   * not there. So:
   *  - the keys are an immutable set behind an atomic pointer; set_keys() publishes a new one and
   *    keeps the old ones (a reload's worth of bytes) until the board goes, as a worker may be
   *    using one;
   *  - the peer's identity and replay state are written by the workers only (receive(), under a
   *    spin lock among workers), and published to peer() by a sequence lock: peer() retries
   *    and never blocks a writer. */
  std::atomic<const std::vector<DpBeatKey> *> keys_{nullptr};
  std::mutex retired_mu_;  // set_keys() and the destructor only
  std::vector<std::unique_ptr<const std::vector<DpBeatKey>>> key_sets_;
  std::atomic_flag rx_lock_ = ATOMIC_FLAG_INIT;  // among workers in receive()
  std::atomic<uint64_t> peer_version_{0};        // odd while receive() rewrites the fields below
  std::atomic<bool> have_peer_{false};
  std::atomic<uint64_t> peer_nonce_{0};
  std::atomic<int64_t> newest_sent_ns_{0};
  std::atomic<uint8_t> peer_role_{0};
  std::atomic<unsigned> peer_workers_{0};
  std::atomic<uint64_t> peer_generation_{0};
  std::atomic<uint64_t> peer_node_[2] = {};  // the peer's node id, kDpBeatNodeIdBytes bytes
  // The peer's MAC for unicast beats, packed in the low 48 bits; 0 until learned.
  std::atomic<uint64_t> peer_mac_{0};
  std::atomic<uint64_t> heard_{0}, no_mbuf_{0};
  std::atomic<uint64_t> rejected_[static_cast<size_t>(DpBeatReject::COUNT)] = {};
};

}  // namespace ftpair::dp
