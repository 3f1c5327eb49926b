#include "dataplane/dp_beat.h"

// SHA256_Init/Update/Final (deprecated in OpenSSL 3, not removed): the only API that lets a
// hash state be copied without an allocation.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstring>
#include <ctime>

#include <rte_byteorder.h>
#include <rte_mbuf.h>
#include <rte_pause.h>

#include "common/clock.h"
#include "dataplane/mbuf.h"

namespace ftpair::dp {

namespace {
constexpr uint8_t kMagic[4] = {'F', 'T', 'D', 'B'};
constexpr uint8_t kVersion = 1;
// Offsets in the payload.
constexpr size_t kOffKey = 5, kOffRole = 6, kOffWorker = 7, kOffWorkers = 8, kOffFlags = 9, kOffNode = 12,
                 kOffGen = 28, kOffNonce = 36, kOffSeq = 44, kOffSent = 52;
static_assert(kOffSent + 8 == kDpBeatSigned);

void put64(uint8_t *p, uint64_t v) {
  v = rte_cpu_to_be_64(v);
  std::memcpy(p, &v, 8);
}
uint64_t get64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return rte_be_to_cpu_64(v);
}

// HMAC-SHA256 (RFC 2104) from the key's prepared states, truncated to the tag.
void tag(const DpBeatKey &k, const uint8_t *p, uint8_t out[kDpBeatTag]) {
  SHA256_CTX st[2];
  if (k.hmac_state.size() == sizeof(st)) {
    std::memcpy(st, k.hmac_state.data(), sizeof(st));
  } else {
    DpBeatKey t{k.id, k.secret};
    t.prepare();
    std::memcpy(st, t.hmac_state.data(), sizeof(st));
  }
  uint8_t inner[SHA256_DIGEST_LENGTH], full[SHA256_DIGEST_LENGTH];
  SHA256_Update(&st[0], p, kDpBeatSigned);
  SHA256_Final(inner, &st[0]);
  SHA256_Update(&st[1], inner, sizeof(inner));
  SHA256_Final(full, &st[1]);
  std::memcpy(out, full, kDpBeatTag);
  OPENSSL_cleanse(st, sizeof(st));
}

uint64_t pack_mac(const rte_ether_addr &a) {
  uint64_t v = 0;
  for (int i = 0; i < 6; i++) v = v << 8 | a.addr_bytes[i];
  return v;
}
rte_ether_addr unpack_mac(uint64_t v) {
  rte_ether_addr a;
  for (int i = 5; i >= 0; i--, v >>= 8) a.addr_bytes[i] = static_cast<uint8_t>(v);
  return a;
}
}  // namespace

const char *dp_beat_reject_label(DpBeatReject r) {
  switch (r) {
    case DpBeatReject::SHORT: return "short";
    case DpBeatReject::BAD_MAGIC: return "bad_magic";
    case DpBeatReject::BAD_VERSION: return "bad_version";
    case DpBeatReject::BAD_FIELD: return "bad_field";
    case DpBeatReject::OWN: return "own";
    case DpBeatReject::UNAUTHENTICATED: return "unauthenticated";
    case DpBeatReject::UNKNOWN_KEY: return "unknown_key";
    case DpBeatReject::BAD_MAC: return "bad_mac";
    case DpBeatReject::REPLAY: return "replay";
    case DpBeatReject::STALE_BOOT: return "stale_boot";
    case DpBeatReject::COUNT: break;
  }
  return "unknown";
}

std::string DpBeat::node_id() const { return std::string(node, strnlen(node, sizeof(node))); }

void dp_beat_encode(const DpBeat &b, const DpBeatKey *key, uint8_t *out) {
  std::memset(out, 0, kDpBeatPayload);
  std::memcpy(out, kMagic, 4);
  out[4] = kVersion;
  out[kOffKey] = key ? key->id : 0;
  out[kOffRole] = b.role;
  out[kOffWorker] = b.worker;
  out[kOffWorkers] = b.workers;
  out[kOffFlags] = b.flags;
  std::memcpy(out + kOffNode, b.node, kDpBeatNodeIdBytes);
  put64(out + kOffGen, b.generation);
  put64(out + kOffNonce, b.nonce);
  put64(out + kOffSeq, b.sequence);
  put64(out + kOffSent, static_cast<uint64_t>(b.sent_unix_ns));
  if (key) tag(*key, out, out + kDpBeatSigned);
}

DpBeatReject dp_beat_decode(const uint8_t *p, size_t n, const std::vector<DpBeatKey> &keys, DpBeat *out) {
  if (n < kDpBeatPayload) return DpBeatReject::SHORT;
  if (std::memcmp(p, kMagic, 4) != 0) return DpBeatReject::BAD_MAGIC;
  if (p[4] != kVersion) return DpBeatReject::BAD_VERSION;
  DpBeat b;
  b.key_id = p[kOffKey];
  b.role = p[kOffRole];
  b.worker = p[kOffWorker];
  b.workers = p[kOffWorkers];
  b.flags = p[kOffFlags];
  std::memcpy(b.node, p + kOffNode, kDpBeatNodeIdBytes);
  const size_t len = strnlen(b.node, kDpBeatNodeIdBytes);
  for (size_t i = len; i < kDpBeatNodeIdBytes; i++)
    if (b.node[i] != 0) return DpBeatReject::BAD_FIELD;
  if (b.workers == 0 || b.workers > kMaxWorkers || b.worker >= b.workers || len == 0 || p[10] || p[11])
    return DpBeatReject::BAD_FIELD;
  b.generation = get64(p + kOffGen);
  b.nonce = get64(p + kOffNonce);
  b.sequence = get64(p + kOffSeq);
  b.sent_unix_ns = static_cast<int64_t>(get64(p + kOffSent));
  if (!keys.empty()) {
    if (b.key_id == 0) return DpBeatReject::UNAUTHENTICATED;
    const DpBeatKey *k = nullptr;
    for (const auto &c : keys)
      if (c.id == b.key_id) k = &c;
    if (k == nullptr) return DpBeatReject::UNKNOWN_KEY;
    uint8_t want[kDpBeatTag];
    tag(*k, p, want);
    if (CRYPTO_memcmp(want, p + kDpBeatSigned, kDpBeatTag) != 0) return DpBeatReject::BAD_MAC;
  }
  *out = b;
  return DpBeatReject::COUNT;
}

void DpBeatKey::prepare() {
  uint8_t block[SHA256_CBLOCK] = {};
  if (secret.size() > sizeof(block))
    SHA256(reinterpret_cast<const uint8_t *>(secret.data()), secret.size(), block);
  else
    std::memcpy(block, secret.data(), secret.size());
  SHA256_CTX st[2];
  uint8_t pad[SHA256_CBLOCK];
  for (int i = 0; i < 2; i++) {
    for (size_t j = 0; j < sizeof(pad); j++) pad[j] = block[j] ^ (i == 0 ? 0x36 : 0x5c);
    SHA256_Init(&st[i]);
    SHA256_Update(&st[i], pad, sizeof(pad));
  }
  hmac_state.assign(reinterpret_cast<const uint8_t *>(st), reinterpret_cast<const uint8_t *>(st) + sizeof(st));
  OPENSSL_cleanse(st, sizeof(st));
  OPENSSL_cleanse(block, sizeof(block));
  OPENSSL_cleanse(pad, sizeof(pad));
}

DpBeatBoard::DpBeatBoard(DpBeatConfig cfg)
    : cfg_(std::move(cfg)),
      interval_tsc_(cfg_.tsc_hz * cfg_.interval_us / 1000000),
      nonce_(cfg_.nonce) {
  while (nonce_ == 0 && RAND_bytes(reinterpret_cast<unsigned char *>(&nonce_), sizeof(nonce_)) == 1) {
  }
  if (nonce_ == 0) nonce_ = static_cast<uint64_t>(unix_ns());  // RAND_bytes failed: still distinct per boot
  if (interval_tsc_ == 0) interval_tsc_ = 1;
  set_keys(cfg_.keys);
}

DpBeatBoard::~DpBeatBoard() {
  std::lock_guard<std::mutex> g(retired_mu_);
  for (auto &set : key_sets_)
    for (const DpBeatKey &k : *set) {
      auto &key = const_cast<DpBeatKey &>(k);
      OPENSSL_cleanse(key.secret.data(), key.secret.size());
      OPENSSL_cleanse(key.hmac_state.data(), key.hmac_state.size());
    }
}

void DpBeatBoard::set_keys(std::vector<DpBeatKey> keys) {
  for (auto &k : keys) k.prepare();
  auto set = std::make_unique<const std::vector<DpBeatKey>>(std::move(keys));
  std::lock_guard<std::mutex> g(retired_mu_);
  keys_.store(set.get(), std::memory_order_release);
  key_sets_.push_back(std::move(set));
}

uint64_t DpBeatBoard::sent_total() const {
  uint64_t n = 0;
  for (unsigned w = 0; w < cfg_.workers && w < kMaxWorkers; w++) n += sent(w);
  return n;
}

rte_mbuf *DpBeatBoard::make(unsigned worker, rte_mempool *pool, uint64_t now_tsc) {
  rte_mbuf *m = mbuf_alloc(pool);
  if (m == nullptr) {
    no_mbuf_.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  auto *eth = reinterpret_cast<rte_ether_hdr *>(rte_pktmbuf_append(m, kDpBeatFrame));
  // Unicast to the peer while it is heard; broadcast before and after (a new peer, a new MAC).
  const uint64_t mac = peer_mac_.load(std::memory_order_relaxed);
  bool unicast = false;
  if (mac) {
    for (unsigned w = 0; w < kMaxWorkers && !unicast; w++) {
      const uint64_t h = peer_[w].heard_tsc.load(std::memory_order_relaxed);
      unicast = h && now_tsc - h <= silence_limit_tsc();
    }
  }
  if (unicast)
    eth->dst_addr = unpack_mac(mac);
  else
    std::memset(&eth->dst_addr, 0xff, sizeof(eth->dst_addr));
  eth->src_addr = cfg_.src_mac;
  eth->ether_type = rte_cpu_to_be_16(kDpBeatEtherType);
  TxSlot &t = tx_[worker];
  DpBeat b;
  b.role = role_.load(std::memory_order_relaxed);
  b.worker = static_cast<uint8_t>(worker);
  b.workers = static_cast<uint8_t>(cfg_.workers);
  std::memcpy(b.node, cfg_.node_id.data(), std::min(cfg_.node_id.size(), kDpBeatNodeIdBytes));
  b.generation = generation_.load(std::memory_order_relaxed);
  b.nonce = nonce_;
  b.sequence = t.seq.load(std::memory_order_relaxed) + 1;
  b.sent_unix_ns = unix_ns();
  const std::vector<DpBeatKey> &keys = *keys_.load(std::memory_order_acquire);
  dp_beat_encode(b, keys.empty() ? nullptr : &keys[0], reinterpret_cast<uint8_t *>(eth + 1));
  t.seq.store(b.sequence, std::memory_order_relaxed);
  t.sent.fetch_add(1, std::memory_order_relaxed);
  t.last_tsc.store(now_tsc, std::memory_order_relaxed);
  return m;
}

namespace {

// The node id as the beat carries it (kDpBeatNodeIdBytes, zero-padded), in two words.
void pack_node(const char *node, uint64_t out[2]) {
  std::memcpy(out, node, kDpBeatNodeIdBytes);
}

}  // namespace

void DpBeatBoard::receive(const uint8_t *frame, size_t n, uint64_t now_tsc) {
  if (n < sizeof(rte_ether_hdr)) return reject(DpBeatReject::SHORT);
  const auto *eth = reinterpret_cast<const rte_ether_hdr *>(frame);
  DpBeat b;
  DpBeatReject r = dp_beat_decode(frame + sizeof(rte_ether_hdr), n - sizeof(rte_ether_hdr),
                                  *keys_.load(std::memory_order_acquire), &b);
  if (r != DpBeatReject::COUNT) return reject(r);
  // Our own beat looped back: the same boot's nonce. The same node id from another boot is a
  // second node configured with our id; ids that fill the beat's field are told apart by the
  // nonce alone (two ids may share their first kDpBeatNodeIdBytes bytes).
  if (b.nonce == nonce_ || (cfg_.node_id.size() < kDpBeatNodeIdBytes && b.node_id() == cfg_.node_id))
    return reject(DpBeatReject::OWN);
  // Among workers only (the control plane reads through the sequence lock, never this lock).
  while (rx_lock_.test_and_set(std::memory_order_acquire)) rte_pause();
  struct Unlock {
    std::atomic_flag &f;
    ~Unlock() { f.clear(std::memory_order_release); }
  } unlock{rx_lock_};
  const bool have = have_peer_.load(std::memory_order_relaxed);
  const bool new_boot = !have || b.nonce != peer_nonce_.load(std::memory_order_relaxed);
  // A new boot of the peer: only with a send time newer than anything accepted before, so beats
  // captured in an earlier boot cannot be replayed.
  if (new_boot && have && b.sent_unix_ns <= newest_sent_ns_.load(std::memory_order_relaxed))
    return reject(DpBeatReject::STALE_BOOT);
  PeerSlot &s = peer_[b.worker];
  if (!new_boot && b.sequence <= s.seq.load(std::memory_order_relaxed)) return reject(DpBeatReject::REPLAY);
  // The sequence lock without stand-alone fences (TSan does not model them): the fields are
  // stored with release, so a reader that sees a new value (acquire) also sees the odd version.
  peer_version_.fetch_add(1, std::memory_order_relaxed);  // odd: being rewritten
  if (new_boot) {
    have_peer_.store(true, std::memory_order_release);
    peer_nonce_.store(b.nonce, std::memory_order_release);
    // Every worker of the new boot starts its silence now: one that never beats is missed.
    for (unsigned w = 0; w < kMaxWorkers; w++) {
      peer_[w].seq.store(0, std::memory_order_release);
      peer_[w].heard_tsc.store(w < b.workers ? now_tsc : 0, std::memory_order_release);
    }
    peer_workers_.store(b.workers, std::memory_order_release);
  }
  s.seq.store(b.sequence, std::memory_order_release);
  s.heard_tsc.store(now_tsc, std::memory_order_release);
  if (b.sent_unix_ns > newest_sent_ns_.load(std::memory_order_relaxed))
    newest_sent_ns_.store(b.sent_unix_ns, std::memory_order_release);
  const unsigned had = peer_workers_.load(std::memory_order_relaxed);
  if (b.workers != had) {
    // The peer's worker count changed (an upgrade to more cores): new workers start now.
    for (unsigned w = had; w < b.workers; w++)
      if (peer_[w].heard_tsc.load(std::memory_order_relaxed) == 0) peer_[w].heard_tsc.store(now_tsc, std::memory_order_release);
    for (unsigned w = b.workers; w < kMaxWorkers; w++) peer_[w].heard_tsc.store(0, std::memory_order_release);
    peer_workers_.store(b.workers, std::memory_order_release);
  }
  peer_role_.store(b.role, std::memory_order_release);
  peer_generation_.store(b.generation, std::memory_order_release);
  uint64_t node[2];
  pack_node(b.node, node);
  peer_node_[0].store(node[0], std::memory_order_release);
  peer_node_[1].store(node[1], std::memory_order_release);
  peer_version_.fetch_add(1, std::memory_order_release);  // even: consistent again
  peer_mac_.store(pack_mac(eth->src_addr), std::memory_order_relaxed);
  heard_.fetch_add(1, std::memory_order_relaxed);
}

DpPeerView DpBeatBoard::peer(uint64_t now_tsc) const {
  DpPeerView v;
  uint64_t node[2];
  // The sequence lock's reader: a copy taken while no receive() rewrote the fields.
  unsigned spins = 0;
  for (;;) {
    const uint64_t v0 = peer_version_.load(std::memory_order_acquire);
    if (v0 & 1) {
      // A writer is inside: it may be a worker preempted on this reader's CPU (the reader is a
      // real-time thread), so after a short spin, sleep and let it finish.
      if (++spins < 64) {
        rte_pause();
      } else {
        const timespec ts{0, 2000};
        nanosleep(&ts, nullptr);
      }
      continue;
    }
    v.heard = have_peer_.load(std::memory_order_acquire);
    v.role = peer_role_.load(std::memory_order_acquire);
    v.workers = peer_workers_.load(std::memory_order_acquire);
    v.generation = peer_generation_.load(std::memory_order_acquire);
    node[0] = peer_node_[0].load(std::memory_order_acquire);
    node[1] = peer_node_[1].load(std::memory_order_acquire);
    uint64_t worst = 0;
    v.worst = 0;
    for (unsigned w = 0; w < kMaxWorkers; w++) {
      if (w >= v.workers) {
        v.silence_tsc[w] = v.sequence[w] = 0;
        continue;
      }
      const uint64_t h = peer_[w].heard_tsc.load(std::memory_order_acquire);
      v.silence_tsc[w] = now_tsc > h ? now_tsc - h : 0;
      v.sequence[w] = peer_[w].seq.load(std::memory_order_acquire);
      if (v.silence_tsc[w] >= worst) worst = v.silence_tsc[w], v.worst = w;
    }
    // The field loads are acquire: the version's second load cannot move before them.
    if (peer_version_.load(std::memory_order_relaxed) == v0) break;
  }
  char id[kDpBeatNodeIdBytes + 1] = {};
  std::memcpy(id, node, kDpBeatNodeIdBytes);
  v.node_id = id;
  return v;
}

}  // namespace ftpair::dp
