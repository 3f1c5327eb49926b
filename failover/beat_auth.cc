#include "failover/beat_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cctype>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

namespace ftpair::fo {

namespace {
constexpr uint8_t kMagic[4] = {'F', 'T', 'P', 'B'};
constexpr uint8_t kVersionPlain = 1, kVersionAuth = 2;
constexpr size_t kMaxDatagram = 1024;
constexpr uint64_t kWindow = 64;

void put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = uint8_t(v);
}
uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = char(std::tolower(static_cast<unsigned char>(c)));
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
}  // namespace

Status load_beat_key(const std::string &path, std::string *secret) {
  std::ifstream f(path);
  if (!f) return InvalidArgument("beat key " + path + ": cannot read: " + std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  std::string digits;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (hexval(c) < 0) return InvalidArgument("beat key " + path + ": not hexadecimal text");
    digits.push_back(c);
  }
  if (digits.size() % 2) return InvalidArgument("beat key " + path + ": an odd number of hex digits");
  if (digits.size() / 2 < kBeatKeyMinBytes)
    return InvalidArgument("beat key " + path + ": " + std::to_string(digits.size() / 2) + " bytes, at least " +
                           std::to_string(kBeatKeyMinBytes) + " needed (e.g. openssl rand -hex 32)");
  secret->clear();
  for (size_t i = 0; i < digits.size(); i += 2) secret->push_back(char(hexval(digits[i]) << 4 | hexval(digits[i + 1])));
  return Status::Ok();
}

/* SHA256_Init/Update/Final, which OpenSSL 3 marks deprecated in favour of EVP. The EVP calls
 * allocate (a context, and a copy of one per HMAC); the beat threads must not. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

std::vector<BeatAuth::KeyState> BeatAuth::key_states(const std::vector<BeatKey> &keys) {
  constexpr size_t kBlock = 64;  // SHA-256's block: a longer key is hashed first (RFC 2104)
  std::vector<KeyState> out;
  out.reserve(keys.size());
  for (const BeatKey &k : keys) {
    uint8_t key[kBlock] = {};
    if (k.secret.size() > kBlock)
      SHA256(reinterpret_cast<const uint8_t *>(k.secret.data()), k.secret.size(), key);
    else
      std::memcpy(key, k.secret.data(), k.secret.size());
    uint8_t pad[kBlock];
    KeyState st;
    st.id = k.id;
    for (size_t i = 0; i < kBlock; i++) pad[i] = key[i] ^ 0x36;
    SHA256_Init(&st.inner);
    SHA256_Update(&st.inner, pad, kBlock);
    for (size_t i = 0; i < kBlock; i++) pad[i] = key[i] ^ 0x5c;
    SHA256_Init(&st.outer);
    SHA256_Update(&st.outer, pad, kBlock);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(pad, sizeof(pad));
    out.push_back(st);
  }
  return out;
}

// The first kBeatTagBytes of HMAC-SHA256(key, data).
void BeatAuth::tag(const KeyState &k, const uint8_t *data, size_t n, uint8_t out[kBeatTagBytes]) {
  SHA256_CTX c = k.inner;
  uint8_t inner[SHA256_DIGEST_LENGTH], full[SHA256_DIGEST_LENGTH];
  SHA256_Update(&c, data, n);
  SHA256_Final(inner, &c);
  c = k.outer;
  SHA256_Update(&c, inner, sizeof(inner));
  SHA256_Final(full, &c);
  std::memcpy(out, full, kBeatTagBytes);
  OPENSSL_cleanse(&c, sizeof(c));
  OPENSSL_cleanse(inner, sizeof(inner));
  OPENSSL_cleanse(full, sizeof(full));
}

#pragma GCC diagnostic pop

BeatAuth::BeatAuth(std::vector<BeatKey> keys, uint64_t nonce)
    : keys_(std::move(keys)), states_(key_states(keys_)), nonce_(nonce) {
  while (nonce_ == 0) {
    if (RAND_bytes(reinterpret_cast<unsigned char *>(&nonce_), sizeof(nonce_)) != 1) {
      std::random_device rd;
      nonce_ = uint64_t(rd()) << 32 | rd();
    }
  }
}

uint8_t BeatAuth::signing_key() const {
  std::lock_guard<std::mutex> g(keys_mu_);
  return keys_.front().id;
}

void BeatAuth::set_keys(std::vector<BeatKey> keys) {
  std::vector<KeyState> states = key_states(keys);  // built, and the old lists freed, outside the lock
  {
    std::lock_guard<std::mutex> g(keys_mu_);
    keys_.swap(keys);
    states_.swap(states);
  }
  for (BeatKey &k : keys) OPENSSL_cleanse(k.secret.data(), k.secret.size());
  for (KeyState &k : states) OPENSSL_cleanse(&k, sizeof(k));
}

std::string BeatAuth::seal(const v1::Beat &b) const {
  std::string d(kBeatAuthHeader + b.ByteSizeLong() + kBeatTagBytes, '\0');
  d.resize(seal_into(b, reinterpret_cast<uint8_t *>(d.data()), d.size()));
  return d;
}

// The tag of a framed datagram (n within bounds): COUNT when genuine, else UNKNOWN_KEY or BAD_MAC.
BeatReject BeatAuth::verify_tag(const uint8_t *p, size_t n) const {
  KeyState k;
  bool known = false;
  {
    std::lock_guard<std::mutex> g(keys_mu_);
    for (const auto &s : states_)
      if (s.id == p[5]) {
        k = s;
        known = true;
      }
  }
  if (!known) return BeatReject::UNKNOWN_KEY;
  uint8_t t[kBeatTagBytes];
  tag(k, p, n - kBeatTagBytes, t);
  OPENSSL_cleanse(&k, sizeof(k));
  return CRYPTO_memcmp(t, p + n - kBeatTagBytes, kBeatTagBytes) == 0 ? BeatReject::COUNT : BeatReject::BAD_MAC;
}

bool BeatAuth::own_datagram(const uint8_t *q, size_t n) const {
  if (n < kBeatAuthHeader + kBeatTagBytes || n > kMaxDatagram || std::memcmp(q, kMagic, 4) != 0 ||
      q[4] != kVersionAuth || get64(q + 8) != nonce_)
    return false;
  return verify_tag(q, n) == BeatReject::COUNT;
}

size_t BeatAuth::seal_into(const v1::Beat &b, uint8_t *buf, size_t cap) const {
  const size_t body = b.ByteSizeLong();
  if (cap < kBeatAuthHeader + body + kBeatTagBytes) return 0;
  KeyState k;
  {
    std::lock_guard<std::mutex> g(keys_mu_);
    k = states_.front();
  }
  std::memset(buf, 0, kBeatAuthHeader);
  std::memcpy(buf, kMagic, 4);
  buf[4] = kVersionAuth;
  buf[5] = k.id;
  put64(buf + 8, nonce_);
  b.SerializeWithCachedSizesToArray(buf + kBeatAuthHeader);
  const size_t n = kBeatAuthHeader + body;
  tag(k, buf, n, buf + n);
  OPENSSL_cleanse(&k, sizeof(k));
  return n + kBeatTagBytes;
}

BeatReject BeatAuth::open(const uint8_t *p, size_t n, v1::Beat *out) {
  if (n < 8) return BeatReject::SHORT;
  if (std::memcmp(p, kMagic, 4) != 0) return BeatReject::BAD_MAGIC;
  if (p[4] == kVersionPlain) return BeatReject::UNAUTHENTICATED;
  if (p[4] != kVersionAuth) return BeatReject::BAD_VERSION;
  if (n < kBeatAuthHeader + kBeatTagBytes) return BeatReject::SHORT;
  if (n > kMaxDatagram) return BeatReject::BAD_PAYLOAD;
  if (const BeatReject r = verify_tag(p, n); r != BeatReject::COUNT) return r;
  /* Genuine from here on: what remains is whether it is new. Parsed into *out, whose strings
   * a beat parsed before has already allocated (a caller that keeps one message per thread
   * allocates nothing); on a refusal *out holds this beat, which the caller ignores. */
  v1::Beat &b = *out;
  if (p[6] != 0 || p[7] != 0 ||
      !b.ParseFromArray(p + kBeatAuthHeader, static_cast<int>(n - kBeatAuthHeader - kBeatTagBytes)))
    return BeatReject::BAD_PAYLOAD;
  const uint64_t nonce = get64(p + 8), seq = b.sequence();
  if (!have_peer_ || nonce != peer_nonce_) {
    if (have_peer_ && b.sent_unix_ns() <= newest_sent_ns_) return BeatReject::STALE_BOOT;
    have_peer_ = true;
    peer_nonce_ = nonce;
    max_seq_ = seq;
    window_ = 1;
  } else if (seq > max_seq_) {
    const uint64_t shift = seq - max_seq_;
    window_ = shift >= kWindow ? 1 : (window_ << shift) | 1;
    max_seq_ = seq;
  } else {
    const uint64_t back = max_seq_ - seq;
    if (back >= kWindow || (window_ >> back) & 1) return BeatReject::REPLAY;
    window_ |= uint64_t(1) << back;
  }
  if (b.sent_unix_ns() > newest_sent_ns_) newest_sent_ns_ = b.sent_unix_ns();
  return BeatReject::COUNT;
}

}  // namespace ftpair::fo
