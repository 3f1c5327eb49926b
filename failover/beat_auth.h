/* Authenticated fast beats: each datagram carries an HMAC-SHA256 tag (OpenSSL) under a pair
 * key, and the receiver refuses replays.
 *
 * Datagram, version 2 (all integers big-endian):
 *   "FTPB" | 2 | key id (1) | 0 0 | boot nonce (8) | Beat (protobuf) | tag (16)
 * The tag is the first 16 bytes of HMAC-SHA256(key, everything before it).
 *
 * Keys: the first key signs; every configured key verifies, so a rotation is "add the new key
 * second on both nodes, then move it first on both, then drop the old one", and the pair is
 * never without a key both accept.
 *
 * Replays: the sender draws a random boot nonce at start; within one nonce the Beat's sequence
 * number must be new within a 64-wide window (reordering tolerated, duplicates refused). A new
 * nonce (the peer restarted) is taken only with a sent_unix_ns newer than every beat accepted
 * so far, so datagrams captured in an earlier boot cannot be replayed. (A peer that restarts
 * with its clock stepped back is refused until its clock passes the last beat seen: its gRPC
 * beats, authenticated by mTLS, still count it as alive.)
 *
 * Open is not thread-safe (its caller serializes it: failover/monitor.cc); seal and set_keys are. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <openssl/sha.h>  // SHA256_CTX (the struct; its functions are used in beat_auth.cc only)

#include "common/status.h"
#include "peer.pb.h"

namespace ftpair::fo {

// Why a fast-beat datagram was ignored.
enum class BeatReject : uint8_t {
  WRONG_SOURCE,
  SHORT,
  BAD_MAGIC,
  BAD_VERSION,
  BAD_PAYLOAD,
  UNAUTHENTICATED,  // no tag (version 1) where keys are configured
  UNKNOWN_KEY,      // a key id this node does not hold
  BAD_MAC,          // the tag does not verify
  REPLAY,           // a sequence number already seen, or too old for the window
  STALE_BOOT,       // a new boot nonce with a send time older than beats already accepted
  COUNT
};
const char *beat_reject_label(BeatReject r);

struct BeatKey {
  uint8_t id = 0;
  std::string secret;  // raw bytes, at least kBeatKeyMinBytes
};

inline constexpr size_t kBeatKeyMinBytes = 16;
inline constexpr size_t kBeatTagBytes = 16;
inline constexpr size_t kBeatAuthHeader = 16;  // magic, version, key id, 2 zero, nonce

/* Reads a key file: hexadecimal text (whitespace ignored), at least 32 digits (16 bytes).
 * INVALID_ARGUMENT naming the file and what is wrong; the secret never appears in it. */
Status load_beat_key(const std::string &path, std::string *secret);

class BeatAuth {
 public:
  // keys[0] signs; ids must be distinct (checked by the config). nonce 0 draws a random one.
  explicit BeatAuth(std::vector<BeatKey> keys, uint64_t nonce = 0);

  uint64_t nonce() const { return nonce_; }
  /* Whether q (n bytes) is a whole datagram this instance sealed (its nonce, and a tag of one
   * of the keys): one it sent, quoted back by an ICMP error. Replays are not checked. */
  bool own_datagram(const uint8_t *q, size_t n) const;
  uint8_t signing_key() const;
  /* A rotation step (SIGHUP): the new key list (keys[0] signs from now on). The replay state
   * (the peer's nonce, window and newest send time) is kept, so nothing captured before can be
   * replayed across the change. */
  void set_keys(std::vector<BeatKey> keys);

  // The datagram for b under the signing key.
  std::string seal(const v1::Beat &b) const;
  /* The same datagram written into buf[0, cap): its length, or 0 when it does not fit. It
   * allocates nothing (nor does open() into a message that held a beat before), so the
   * real-time beat threads never wait for the allocator's lock (which a preempted thread of
   * normal priority may hold). */
  size_t seal_into(const v1::Beat &b, uint8_t *buf, size_t cap) const;
  /* Verifies a datagram and, when it is genuine and new, fills *out and returns
   * BeatReject::COUNT; else the reason (UNAUTHENTICATED for a version-1 datagram, UNKNOWN_KEY,
   * BAD_MAC, REPLAY, STALE_BOOT, and the framing reasons). */
  BeatReject open(const uint8_t *p, size_t n, v1::Beat *out);
  // (*out is overwritten also when a genuine beat is refused: BAD_PAYLOAD, REPLAY, STALE_BOOT.)

 private:
  /* HMAC-SHA256 of one key with its inner and outer pads already hashed: a tag is two
   * SHA-256 finals from copies of these (plain structs, no allocation, as OpenSSL 3's HMAC()
   * would make per call). */
  struct KeyState {
    uint8_t id = 0;
    SHA256_CTX inner{}, outer{};
  };
  static std::vector<KeyState> key_states(const std::vector<BeatKey> &keys);
  static void tag(const KeyState &k, const uint8_t *data, size_t n, uint8_t out[kBeatTagBytes]);
  BeatReject verify_tag(const uint8_t *p, size_t n) const;

  mutable std::mutex keys_mu_;  // held only to read or swap the lists below, never to allocate
  std::vector<BeatKey> keys_;  // keys_mu_
  std::vector<KeyState> states_;  // keys_mu_, one per key, in the same order
  uint64_t nonce_;
  // Replay state (the receiving thread).
  bool have_peer_ = false;
  uint64_t peer_nonce_ = 0, max_seq_ = 0, window_ = 0;
  int64_t newest_sent_ns_ = 0;
};

}  // namespace ftpair::fo
