// Authenticated fast beats (failover/beat_auth.h): tags, keys and rotation, replays, and the
// key file. What an attacker on the management network can send is each case here.
#include "failover/beat_auth.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "failover/monitor.h"

namespace ftpair::fo {
namespace {

const std::string kSecretA(32, '\x11'), kSecretB(32, '\x22');

v1::Beat beat(uint64_t seq, int64_t sent_ns, const std::string &role = "standby", uint64_t gen = 3) {
  v1::Beat b;
  b.set_node_id("b");
  b.set_role(role);
  b.set_generation(gen);
  b.set_sequence(seq);
  b.set_sent_unix_ns(sent_ns);
  b.set_dataplane_healthy(true);
  return b;
}

BeatReject open(BeatAuth &rx, const std::string &d, v1::Beat *out = nullptr) {
  v1::Beat tmp;
  return rx.open(reinterpret_cast<const uint8_t *>(d.data()), d.size(), out ? out : &tmp);
}

/* The tag is HMAC-SHA256 (RFC 2104) truncated to 16 bytes, as OpenSSL's HMAC() computes it: the
 * precomputed pads must give the same bytes for every key length, including keys longer than
 * SHA-256's 64-byte block (hashed first), or a pair across an upgrade would not verify. */
TEST(BeatAuth, TheTagIsOpenSslHmacSha256) {
  for (size_t len : {16, 32, 63, 64, 65, 100, 200}) {
    std::string secret;
    for (size_t i = 0; i < len; i++) secret.push_back(char(i * 37 + len));
    BeatAuth tx({{3, secret}}, 99);
    const std::string d = tx.seal(beat(len, int64_t(len) * 1000));
    ASSERT_GT(d.size(), kBeatAuthHeader + kBeatTagBytes);
    uint8_t want[EVP_MAX_MD_SIZE];
    unsigned wl = 0;
    HMAC(EVP_sha256(), secret.data(), int(secret.size()), reinterpret_cast<const uint8_t *>(d.data()),
         d.size() - kBeatTagBytes, want, &wl);
    ASSERT_EQ(wl, 32u);
    EXPECT_EQ(std::string(d.end() - kBeatTagBytes, d.end()), std::string(reinterpret_cast<char *>(want), kBeatTagBytes))
        << "key of " << len << " bytes";
    // seal_into writes the same bytes, and refuses a buffer too small for them.
    std::vector<uint8_t> buf(d.size());
    EXPECT_EQ(tx.seal_into(beat(len, int64_t(len) * 1000), buf.data(), buf.size()), d.size());
    EXPECT_EQ(std::string(buf.begin(), buf.end()), d);
    EXPECT_EQ(tx.seal_into(beat(len, int64_t(len) * 1000), buf.data(), buf.size() - 1), 0u);
  }
}

TEST(BeatAuth, GenuineBeatsPassAndSayWhatWasSent) {
  BeatAuth tx({{1, kSecretA}}), rx({{1, kSecretA}});
  v1::Beat got;
  ASSERT_EQ(open(rx, tx.seal(beat(1, 1000, "active", 7)), &got), BeatReject::COUNT);
  EXPECT_EQ(got.role(), "active");
  EXPECT_EQ(got.generation(), 7u);
  EXPECT_EQ(got.sequence(), 1u);
  EXPECT_EQ(open(rx, tx.seal(beat(2, 1001))), BeatReject::COUNT);
}

TEST(BeatAuth, AnyChangedByteIsRefused) {
  BeatAuth tx({{1, kSecretA}});
  const std::string d = tx.seal(beat(5, 5000, "active", 1ull << 40));
  for (size_t i = 0; i < d.size(); i++) {
    SCOPED_TRACE(i);
    BeatAuth rx({{1, kSecretA}});
    std::string x = d;
    x[i] = char(x[i] ^ 0x01);
    const BeatReject r = open(rx, x);
    EXPECT_NE(r, BeatReject::COUNT);
    if (i >= 6) {
      EXPECT_EQ(r, BeatReject::BAD_MAC);  // past magic, version and key id
    }
  }
  BeatAuth rx({{1, kSecretA}});
  EXPECT_EQ(open(rx, d.substr(0, d.size() - 1)), BeatReject::BAD_MAC) << "a truncated tag";
  EXPECT_EQ(open(rx, d.substr(0, 20)), BeatReject::SHORT);
  EXPECT_EQ(open(rx, d), BeatReject::COUNT) << "the genuine one still passes after all that";
}

TEST(BeatAuth, WrongKeyUnknownKeyAndUnsignedDatagramsAreRefused) {
  BeatAuth rx({{1, kSecretA}});
  BeatAuth other_secret({{1, kSecretB}}), other_id({{9, kSecretA}});
  EXPECT_EQ(open(rx, other_secret.seal(beat(1, 1))), BeatReject::BAD_MAC);
  EXPECT_EQ(open(rx, other_id.seal(beat(1, 1))), BeatReject::UNKNOWN_KEY);
  // The forged "I am ACTIVE with generation 2^40" of the issue, as a plain datagram.
  EXPECT_EQ(open(rx, encode_beat_datagram(beat(1, 1, "active", 1ull << 40))), BeatReject::UNAUTHENTICATED);
}

TEST(BeatAuth, ReplaysAreRefusedReorderingIsNot) {
  BeatAuth tx({{1, kSecretA}}), rx({{1, kSecretA}});
  std::vector<std::string> d;
  for (uint64_t s = 1; s <= 100; s++) d.push_back(tx.seal(beat(s, int64_t(s))));
  EXPECT_EQ(open(rx, d[9]), BeatReject::COUNT);   // 10
  EXPECT_EQ(open(rx, d[9]), BeatReject::REPLAY);  // 10 again
  EXPECT_EQ(open(rx, d[4]), BeatReject::COUNT);   // 5: late, within the window
  EXPECT_EQ(open(rx, d[4]), BeatReject::REPLAY);
  EXPECT_EQ(open(rx, d[99]), BeatReject::COUNT);  // 100
  EXPECT_EQ(open(rx, d[36]), BeatReject::COUNT);  // 37: 63 behind, still in the window
  EXPECT_EQ(open(rx, d[35]), BeatReject::REPLAY) << "64 behind: too old to tell, refused";
  EXPECT_EQ(open(rx, d[98]), BeatReject::COUNT);
  EXPECT_EQ(open(rx, d[98]), BeatReject::REPLAY);
}

// Datagrams captured in an earlier boot of the peer cannot be replayed after it restarts.
TEST(BeatAuth, ANewBootIsTakenOnlyWithNewerBeats) {
  BeatAuth rx({{1, kSecretA}});
  BeatAuth boot1({{1, kSecretA}}, 111), boot2({{1, kSecretA}}, 222);
  const std::string old1 = boot1.seal(beat(1, 1'000)), old2 = boot1.seal(beat(2, 2'000));
  ASSERT_EQ(open(rx, old1), BeatReject::COUNT);
  ASSERT_EQ(open(rx, old2), BeatReject::COUNT);
  // The peer restarts: a new nonce, sequence from 1 again, a later clock.
  EXPECT_EQ(open(rx, boot2.seal(beat(1, 3'000))), BeatReject::COUNT);
  EXPECT_EQ(open(rx, boot2.seal(beat(2, 4'000))), BeatReject::COUNT);
  // The attacker replays the first boot's beats: another nonce, older times.
  EXPECT_EQ(open(rx, old2), BeatReject::STALE_BOOT);
  EXPECT_EQ(open(rx, old1), BeatReject::STALE_BOOT);
  EXPECT_EQ(open(rx, boot2.seal(beat(3, 5'000))), BeatReject::COUNT);
}

/* Rotation: both nodes hold both keys while each in turn signs with the new one. At no step
 * does either refuse the other. */
TEST(BeatAuth, RotationKeepsThePairTalking) {
  const BeatKey old_k{1, kSecretA}, new_k{2, kSecretB};
  int64_t t = 0;
  uint64_t seq_a = 0, seq_b = 0;
  auto talk = [&](BeatAuth &a, BeatAuth &b) {
    EXPECT_EQ(open(b, a.seal(beat(++seq_a, ++t))), BeatReject::COUNT);
    EXPECT_EQ(open(a, b.seal(beat(++seq_b, ++t))), BeatReject::COUNT);
  };
  {
    BeatAuth a({old_k}, 1), b({old_k}, 2);
    talk(a, b);
  }
  {
    BeatAuth a({old_k, new_k}, 3), b({old_k}, 4);  // a learns the new key first
    seq_a = seq_b = 0;
    talk(a, b);
  }
  {
    BeatAuth a({old_k, new_k}, 5), b({new_k, old_k}, 6);  // b signs with the new one
    seq_a = seq_b = 0;
    talk(a, b);
  }
  {
    BeatAuth a({new_k}, 7), b({new_k, old_k}, 8);  // a drops the old key
    seq_a = seq_b = 0;
    talk(a, b);
    BeatAuth stale({old_k}, 9);
    EXPECT_EQ(open(a, stale.seal(beat(1, ++t))), BeatReject::UNKNOWN_KEY) << "the retired key is refused";
  }
}

/* The same rotation done on running nodes (Monitor::set_beat_keys on SIGHUP): the keys
 * change, the replay state does not, so a datagram captured before the change cannot be
 * replayed after it, and the new signing key is used at once. */
TEST(BeatAuth, SetKeysKeepsTheReplayState) {
  BeatAuth tx({{1, kSecretA}}, 11), rx({{1, kSecretA}}, 12);
  const std::string old = tx.seal(beat(1, 100));
  ASSERT_EQ(open(rx, old), BeatReject::COUNT);
  rx.set_keys({{1, kSecretA}, {2, kSecretB}});
  EXPECT_EQ(open(rx, old), BeatReject::REPLAY);
  tx.set_keys({{2, kSecretB}, {1, kSecretA}});
  EXPECT_EQ(tx.signing_key(), 2);
  EXPECT_EQ(open(rx, tx.seal(beat(2, 101))), BeatReject::COUNT);
  rx.set_keys({{2, kSecretB}});
  EXPECT_EQ(open(rx, old), BeatReject::UNKNOWN_KEY);
  EXPECT_EQ(open(rx, tx.seal(beat(3, 102))), BeatReject::COUNT);
}

class BeatKeyFile : public ::testing::Test {
 protected:
  void SetUp() override { path_ = "/tmp/ftpair-beat-key-" + std::to_string(getpid()); }
  void TearDown() override { std::remove(path_.c_str()); }
  Status load(const std::string &text, std::string *secret) {
    std::ofstream(path_) << text;
    return load_beat_key(path_, secret);
  }
  std::string path_;
};

TEST_F(BeatKeyFile, HexTextOfAtLeast16Bytes) {
  std::string s;
  ASSERT_TRUE(load("00112233445566778899aabbccddeeff\n", &s).ok());
  ASSERT_EQ(s.size(), 16u);
  EXPECT_EQ(uint8_t(s[0]), 0x00);
  EXPECT_EQ(uint8_t(s[15]), 0xff);
  ASSERT_TRUE(load("0011 2233 4455 6677\n8899 AABB CCDD EEFF 0102\n", &s).ok());
  EXPECT_EQ(s.size(), 18u);
  for (const char *bad : {"00112233", "0011223344556677889900112233445", "zz112233445566778899aabbccddeeff", ""}) {
    SCOPED_TRACE(bad);
    Status st = load(bad, &s);
    EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT);
    EXPECT_NE(st.message().find(path_), std::string::npos) << st.message();
    EXPECT_EQ(st.message().find("zz11"), std::string::npos) << "the key's text is never quoted";
  }
  std::remove(path_.c_str());
  EXPECT_EQ(load_beat_key(path_, &s).code(), Code::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace ftpair::fo
