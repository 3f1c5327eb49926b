// Dataplane beats (issue 19): the frame, its authentication, replays, and what the board
// publishes. Two boards stand for the two nodes; frames pass between them as bytes.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <rte_cycles.h>
#include <rte_mbuf.h>

#include "dataplane/dp_beat.h"
#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

const DpBeatKey kKey{7, std::string(32, 'k')};
const DpBeatKey kOther{9, std::string(32, 'o')};

DpBeatConfig cfg(const char *node, unsigned workers, std::vector<DpBeatKey> keys, uint8_t mac_last) {
  DpBeatConfig c;
  c.node_id = node;
  c.workers = workers;
  c.keys = std::move(keys);
  c.interval_us = 1000;
  c.miss = 3;
  c.tsc_hz = 1000000000;  // 1 tick = 1 ns: the tests pass their own clock
  c.src_mac = {{0x02, 0, 0, 0, 0, mac_last}};
  return c;
}

std::vector<uint8_t> frame_of(DpBeatBoard &b, unsigned worker, uint64_t now) {
  rte_mbuf *m = b.make(worker, test::test_pool(), now);
  EXPECT_NE(m, nullptr);
  if (m == nullptr) return {};
  std::vector<uint8_t> f(rte_pktmbuf_mtod(m, uint8_t *), rte_pktmbuf_mtod(m, uint8_t *) + rte_pktmbuf_data_len(m));
  rte_pktmbuf_free(m);
  return f;
}

void give(DpBeatBoard &to, const std::vector<uint8_t> &f, uint64_t now) { to.receive(f.data(), f.size(), now); }

TEST(DpBeat, TheFrameCarriesNodeWorkerRoleGenerationAndSequenceFromTheOwnMac) {
  DpBeatBoard a(cfg("a", 2, {kKey}, 1));
  a.set_local(3, 42);
  auto f = frame_of(a, 1, 1000);
  ASSERT_EQ(f.size(), kDpBeatFrame);
  const auto *eth = reinterpret_cast<const rte_ether_hdr *>(f.data());
  EXPECT_EQ(rte_be_to_cpu_16(eth->ether_type), kDpBeatEtherType);
  EXPECT_EQ(eth->src_addr.addr_bytes[5], 1) << "the node's own MAC, never the virtual one";
  EXPECT_TRUE(rte_is_broadcast_ether_addr(&eth->dst_addr)) << "broadcast until the peer is heard";
  DpBeat b;
  ASSERT_EQ(dp_beat_decode(f.data() + sizeof(rte_ether_hdr), f.size() - sizeof(rte_ether_hdr), {kKey}, &b),
            DpBeatReject::COUNT);
  EXPECT_EQ(b.node_id(), "a");
  EXPECT_EQ(b.worker, 1);
  EXPECT_EQ(b.workers, 2);
  EXPECT_EQ(b.role, 3);
  EXPECT_EQ(b.generation, 42u);
  EXPECT_EQ(b.sequence, 1u);
  EXPECT_EQ(b.key_id, kKey.id);
  EXPECT_EQ(b.nonce, a.nonce());
  EXPECT_EQ(a.sent(1), 1u);
  EXPECT_EQ(a.last_sent_tsc(1), 1000u);
}

TEST(DpBeat, AuthenticBeatsArePublishedPerWorkerAndTheSilenceIsMeasured) {
  DpBeatBoard a(cfg("a", 2, {kKey}, 1)), b(cfg("b", 1, {kKey}, 2));
  a.set_local(3, 5);
  give(b, frame_of(a, 0, 100), 1'000'000);
  give(b, frame_of(a, 1, 100), 1'200'000);
  DpPeerView v = b.peer(2'000'000);
  EXPECT_TRUE(v.heard);
  EXPECT_EQ(v.node_id, "a");
  EXPECT_EQ(v.workers, 2u);
  EXPECT_EQ(v.role, 3);
  EXPECT_EQ(v.generation, 5u);
  EXPECT_EQ(v.silence_tsc[0], 1'000'000u);
  EXPECT_EQ(v.silence_tsc[1], 800'000u);
  EXPECT_EQ(v.worst, 0u);
  EXPECT_EQ(b.heard(), 2u);
  // Heard: b now answers a's beats by unicast to a's own MAC.
  auto f = frame_of(b, 0, 1'500'000);
  const auto *eth = reinterpret_cast<const rte_ether_hdr *>(f.data());
  EXPECT_EQ(eth->dst_addr.addr_bytes[5], 1);
  EXPECT_FALSE(rte_is_broadcast_ether_addr(&eth->dst_addr));
  // Silent past the limit: broadcast again (a replaced peer has another MAC).
  f = frame_of(b, 0, 1'200'000 + 3'000'001);
  EXPECT_TRUE(rte_is_broadcast_ether_addr(&reinterpret_cast<const rte_ether_hdr *>(f.data())->dst_addr));
}

TEST(DpBeat, AWorkerOfTheNewBootThatNeverBeatsIsSilentFromTheFirstBeat) {
  DpBeatBoard a(cfg("a", 3, {kKey}, 1)), b(cfg("b", 1, {kKey}, 2));
  give(b, frame_of(a, 0, 0), 1'000'000);
  DpPeerView v = b.peer(5'000'000);
  EXPECT_EQ(v.workers, 3u);
  EXPECT_EQ(v.silence_tsc[2], 4'000'000u);
}

TEST(DpBeat, ForgedUnauthenticatedUnknownKeyAndMalformedFramesChangeNothingAndAreCounted) {
  DpBeatBoard a(cfg("a", 1, {kKey}, 1)), b(cfg("b", 1, {kKey}, 2));
  DpBeatBoard mallory(cfg("a", 1, {kOther}, 1));  // claims to be a, under a key b does not hold
  DpBeatBoard plain(cfg("a", 1, {}, 1));          // claims to be a, unsigned
  give(b, frame_of(mallory, 0, 0), 10);
  EXPECT_EQ(b.rejected(DpBeatReject::UNKNOWN_KEY), 1u);
  give(b, frame_of(plain, 0, 0), 10);
  EXPECT_EQ(b.rejected(DpBeatReject::UNAUTHENTICATED), 1u);
  // A genuine frame with one bit changed: the tag no longer verifies.
  auto f = frame_of(a, 0, 0);
  f[sizeof(rte_ether_hdr) + 30] ^= 1;  // the generation
  give(b, f, 10);
  EXPECT_EQ(b.rejected(DpBeatReject::BAD_MAC), 1u);
  // The same key id with another secret.
  DpBeatBoard forger(cfg("a", 1, {DpBeatKey{kKey.id, std::string(32, 'x')}}, 1));
  give(b, frame_of(forger, 0, 0), 10);
  EXPECT_EQ(b.rejected(DpBeatReject::BAD_MAC), 2u);
  // Malformed: short, bad magic, bad version, a worker beyond the count.
  f = frame_of(a, 0, 0);
  give(b, std::vector<uint8_t>(f.begin(), f.begin() + 40), 10);
  give(b, std::vector<uint8_t>(f.begin(), f.begin() + 10), 10);
  EXPECT_EQ(b.rejected(DpBeatReject::SHORT), 2u);
  auto g = f;
  g[sizeof(rte_ether_hdr)] = 'X';
  give(b, g, 10);
  EXPECT_EQ(b.rejected(DpBeatReject::BAD_MAGIC), 1u);
  g = f;
  g[sizeof(rte_ether_hdr) + 4] = 2;
  give(b, g, 10);
  EXPECT_EQ(b.rejected(DpBeatReject::BAD_VERSION), 1u);
  g = f;
  g[sizeof(rte_ether_hdr) + 7] = 5;  // worker 5 of 1
  give(b, g, 10);
  EXPECT_EQ(b.rejected(DpBeatReject::BAD_FIELD), 1u);
  EXPECT_EQ(b.heard(), 0u);
  EXPECT_FALSE(b.peer(20).heard) << "nothing of it reached the peer view";
  // The genuine frame itself still counts.
  give(b, f, 10);
  EXPECT_EQ(b.heard(), 1u);
}

TEST(DpBeat, ReplaysAndOwnBeatsAreRefused) {
  DpBeatBoard a(cfg("a", 1, {kKey}, 1)), b(cfg("b", 1, {kKey}, 2));
  auto f1 = frame_of(a, 0, 0), f2 = frame_of(a, 0, 0);
  give(b, f2, 100);
  give(b, f1, 200);  // older sequence
  give(b, f2, 300);  // the same again
  EXPECT_EQ(b.rejected(DpBeatReject::REPLAY), 2u);
  EXPECT_EQ(b.peer(300).silence_tsc[0], 200u) << "a replay is no sign of life";
  // Its own beat looped back.
  give(b, frame_of(b, 0, 0), 400);
  EXPECT_EQ(b.rejected(DpBeatReject::OWN), 1u);
}

TEST(DpBeat, ANewBootIsTakenOnlyWithANewerSendTime) {
  DpBeatBoard b(cfg("b", 1, {kKey}, 2));
  auto a1 = std::make_unique<DpBeatBoard>(cfg("a", 1, {kKey}, 1));
  auto old_frame = frame_of(*a1, 0, 0);  // captured in a's first boot
  give(b, frame_of(*a1, 0, 0), 10);
  give(b, frame_of(*a1, 0, 0), 20);
  // a restarts: new nonce, its beats are taken.
  DpBeatBoard a2(cfg("a", 1, {kKey}, 1));
  give(b, frame_of(a2, 0, 0), 30);
  EXPECT_EQ(b.heard(), 3u);
  // The first boot's captured frame, replayed now: an old send time under a nonce not current.
  give(b, old_frame, 40);
  EXPECT_EQ(b.rejected(DpBeatReject::STALE_BOOT), 1u);
  EXPECT_EQ(b.peer(40).silence_tsc[0], 10u);
}

TEST(DpBeat, KeyRotationVerifiesWithEveryKeyAndSignsWithTheFirst) {
  DpBeatBoard a(cfg("a", 1, {kKey}, 1)), b(cfg("b", 1, {kKey}, 2));
  b.set_keys({kKey, kOther});
  give(b, frame_of(a, 0, 0), 10);
  a.set_keys({kOther, kKey});
  auto f = frame_of(a, 0, 0);
  DpBeat d;
  ASSERT_EQ(dp_beat_decode(f.data() + sizeof(rte_ether_hdr), f.size() - sizeof(rte_ether_hdr), {kOther}, &d),
            DpBeatReject::COUNT);
  EXPECT_EQ(d.key_id, kOther.id);
  give(b, f, 20);
  EXPECT_EQ(b.heard(), 2u);
}

TEST(DpBeat, AnEmptyPoolIsCountedNotFatal) {
  rte_mempool *tiny = rte_pktmbuf_pool_create(test::unique_name("dpb").c_str(), 3, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                              SOCKET_ID_ANY);
  ASSERT_NE(tiny, nullptr);
  std::vector<rte_mbuf *> hoard;
  while (rte_mbuf *m = rte_pktmbuf_alloc(tiny)) hoard.push_back(m);
  DpBeatBoard a(cfg("a", 1, {kKey}, 1));
  EXPECT_EQ(a.make(0, tiny, 0), nullptr);
  EXPECT_EQ(a.no_mbuf(), 1u);
  EXPECT_EQ(a.sent(0), 0u);
  for (auto *m : hoard) rte_pktmbuf_free(m);
  rte_mempool_free(tiny);
}

// The tag from the key's prepared hash states is HMAC-SHA256 (OpenSSL's one-shot HMAC()),
// truncated, for short keys, 64-byte keys and keys longer than a block; prepared or not.
TEST(DpBeat, ThePreparedTagIsHmacSha256) {
  for (size_t len : {1u, 32u, 64u, 65u, 200u}) {
    DpBeatKey k{3, std::string(len, '\0')};
    for (size_t i = 0; i < len; i++) k.secret[i] = static_cast<char>(i * 7 + 1);
    DpBeat b;
    b.key_id = 3;
    std::memcpy(b.node, "n", 1);
    b.sequence = 42 + len;
    uint8_t plain[kDpBeatPayload], prepared[kDpBeatPayload];
    dp_beat_encode(b, &k, plain);
    DpBeatKey kp = k;
    kp.prepare();
    dp_beat_encode(b, &kp, prepared);
    uint8_t want[EVP_MAX_MD_SIZE];
    unsigned wl = 0;
    HMAC(EVP_sha256(), k.secret.data(), static_cast<int>(len), plain, kDpBeatSigned, want, &wl);
    EXPECT_EQ(std::memcmp(plain + kDpBeatSigned, want, kDpBeatTag), 0) << "key of " << len << " bytes";
    EXPECT_EQ(std::memcmp(prepared, plain, kDpBeatPayload), 0) << "key of " << len << " bytes";
    DpBeat out;
    EXPECT_EQ(dp_beat_decode(prepared, kDpBeatPayload, {kp}, &out), DpBeatReject::COUNT);
  }
}

// Node ids longer than the beat's field may share its first 16 bytes: the nonce tells the nodes
// apart, and neither takes the other's beats for its own.
TEST(DpBeat, LongNodeIdsSharingAPrefixAreNotTakenForOwnBeats) {
  DpBeatBoard a(cfg("appliance-east-01-first", 1, {kKey}, 1)), b(cfg("appliance-east-01-second", 1, {kKey}, 2));
  give(b, frame_of(a, 0, 0), 10);
  EXPECT_EQ(b.rejected(DpBeatReject::OWN), 0u);
  EXPECT_EQ(b.heard(), 1u);
  EXPECT_EQ(b.peer(10).node_id, "appliance-east-0") << "the id as the beat carries it";
  give(b, frame_of(b, 0, 0), 20);
  EXPECT_EQ(b.rejected(DpBeatReject::OWN), 1u) << "its own beat is still recognised, by the nonce";
  // A short id that is the same: a second node configured with our id.
  DpBeatBoard x(cfg("b", 1, {kKey}, 3)), y(cfg("b", 1, {kKey}, 4));
  give(y, frame_of(x, 0, 0), 10);
  EXPECT_EQ(y.rejected(DpBeatReject::OWN), 1u);
}

/* The control plane's reads never wait for a worker and a worker never waits for the control
 * plane: workers receive beats and rotate nothing while a reader takes views and a reload swaps
 * the keys. Every view is one receive()'s state (a node id and worker count of one of the two
 * boots, a sequence that only grows), and every beat is heard or refused for its key. (TSan, in
 * make test-tsan, checks the ordering itself.) */
TEST(DpBeat, ViewsAndKeySwapsRunBesideReceivingWorkers) {
  DpBeatBoard b(cfg("b", 2, {kKey}, 2));
  DpBeatBoard p1(cfg("peer-one", 2, {kKey}, 1)), p2(cfg("peer-two", 1, {kKey}, 3));
  constexpr int kFrames = 4000;
  std::vector<std::vector<uint8_t>> frames;
  for (int i = 0; i < kFrames; i++) frames.push_back(frame_of(i % 2 ? p1 : p2, i % 2 ? (i / 2) % 2 : 0, 0));
  std::atomic<bool> done{false};
  std::atomic<int> bad_views{0}, views{0};
  std::thread reader([&] {
    while (!done.load()) {
      DpPeerView v = b.peer(1);
      views++;
      if (!v.heard) continue;
      const bool ok = (v.node_id == "peer-one" && v.workers == 2) || (v.node_id == "peer-two" && v.workers == 1);
      if (!ok) bad_views++;
    }
  });
  std::thread rekey([&] {
    for (int i = 0; i < 200 && !done.load(); i++) b.set_keys({kKey, kOther});
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; w++)
    workers.emplace_back([&, w] {
      for (int i = w; i < kFrames; i += 2) b.receive(frames[i].data(), frames[i].size(), 1);
    });
  for (auto &t : workers) t.join();
  rekey.join();
  done = true;
  reader.join();
  EXPECT_EQ(bad_views.load(), 0) << "of " << views.load() << " views";
  uint64_t refused = 0;
  for (size_t r = 0; r < static_cast<size_t>(DpBeatReject::COUNT); r++) refused += b.rejected(static_cast<DpBeatReject>(r));
  EXPECT_EQ(b.heard() + refused, static_cast<uint64_t>(kFrames));
  EXPECT_EQ(b.rejected(DpBeatReject::UNKNOWN_KEY) + b.rejected(DpBeatReject::BAD_MAC), 0u) << "the signing key stayed in every set";
}

}  // namespace
}  // namespace ftpair::dp
