// The IPFIX session-log exporter (control/ipfix.h), received on a loopback UDP socket and
// decoded here the way a collector would: templates learnt from the stream, records read
// through them.
#include "control/ipfix.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ftpair {
namespace {

using dp::SessionEvent;
using dp::SessionEventRing;

// --- a small IPFIX decoder -------------------------------------------------------------

struct Record {
  uint16_t template_id = 0;
  std::map<uint16_t, uint64_t> f;  // IE -> value (big-endian unsigned, as a collector reads it)
};

struct Message {
  uint16_t version = 0, length = 0;
  uint32_t export_time = 0, seq = 0, domain = 0;
  size_t bytes = 0;
  std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>> templates;  // in this message
  std::vector<Record> records;
  std::vector<std::string> errors;
};

uint64_t be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

class Decoder {
 public:
  Message decode(const uint8_t *d, size_t n) {
    Message m;
    m.bytes = n;
    if (n < 16) {
      m.errors.push_back("short header");
      return m;
    }
    m.version = uint16_t(be(d, 2));
    m.length = uint16_t(be(d + 2, 2));
    m.export_time = uint32_t(be(d + 4, 4));
    m.seq = uint32_t(be(d + 8, 4));
    m.domain = uint32_t(be(d + 12, 4));
    if (m.length != n) m.errors.push_back("length field " + std::to_string(m.length) + " != " + std::to_string(n));
    size_t off = 16;
    while (off + 4 <= n) {
      const uint16_t set_id = uint16_t(be(d + off, 2)), set_len = uint16_t(be(d + off + 2, 2));
      if (set_len < 4 || off + set_len > n) {
        m.errors.push_back("bad set length");
        return m;
      }
      const uint8_t *p = d + off + 4, *end = d + off + set_len;
      if (set_id == 2) {
        while (p + 4 <= end) {
          const uint16_t tid = uint16_t(be(p, 2)), count = uint16_t(be(p + 2, 2));
          p += 4;
          std::vector<std::pair<uint16_t, uint16_t>> fields;
          for (uint16_t i = 0; i < count && p + 4 <= end; i++, p += 4)
            fields.emplace_back(uint16_t(be(p, 2)), uint16_t(be(p + 2, 2)));
          m.templates[tid] = fields;
          known_[tid] = fields;
        }
      } else if (set_id >= 256) {
        auto t = known_.find(set_id);
        if (t == known_.end()) {
          m.errors.push_back("data set " + std::to_string(set_id) + " before its template");
        } else {
          size_t rec_len = 0;
          for (auto &[ie, len] : t->second) rec_len += len;
          while (p + rec_len <= end) {
            Record r;
            r.template_id = set_id;
            for (auto &[ie, len] : t->second) {
              r.f[ie] = be(p, len);
              p += len;
            }
            m.records.push_back(r);
          }
          if (p != end) m.errors.push_back("trailing bytes in a data set");
        }
      } else {
        m.errors.push_back("unexpected set id " + std::to_string(set_id));
      }
      off += set_len;
    }
    if (off != n) m.errors.push_back("trailing bytes after the last set");
    return m;
  }

 private:
  std::map<uint16_t, std::vector<std::pair<uint16_t, uint16_t>>> known_;
};

// --- fixture: a collector socket on loopback, port 0 ----------------------------------

constexpr uint64_t kT = 1'700'000'000'123ull;

SessionEvent event(uint8_t kind, uint32_t n) {
  SessionEvent e{};
  e.unix_ms = kT + n;
  e.kind = kind;
  e.proto = (n & 1) ? IPPROTO_TCP : IPPROTO_UDP;
  e.in_ip = htonl(0xC6120100u + (n & 0xff));   // 198.18.1.x
  e.nat_ip = htonl(0xC6130001u + (n & 0x3));   // 198.19.0.1..4
  e.in_port = htons(uint16_t(10000 + n));
  e.nat_port = htons(uint16_t(40000 + n));
  if (dp::is_session_kind(kind)) {
    e.ext_ip = htonl(0xC6138000u + (n & 0xff));  // 198.19.128.x
    e.ext_port = htons(uint16_t(443 + n));
  }
  return e;
}

class IpfixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    socklen_t l = sizeof(a);
    ASSERT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &l), 0);
    port_ = ntohs(a.sin_port);
    int rcvbuf = 4 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  void TearDown() override { ::close(fd_); }

  IpfixConfig config() const {
    IpfixConfig c;
    c.collector = "127.0.0.1:" + std::to_string(port_);
    c.observation_domain = 77;
    c.flush_ms = 20;
    return c;
  }
  // The next message within timeout_ms, decoded; nullopt when none came.
  std::optional<Message> recv(int timeout_ms = 2000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
    uint8_t buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return std::nullopt;
    Message m = dec_.decode(buf, size_t(n));
    for (auto &e : m.errors) ADD_FAILURE() << "decode: " << e;
    return m;
  }
  // Messages until `records` data records have arrived (or a 2 s silence).
  std::vector<Message> recv_records(size_t records) {
    std::vector<Message> out;
    size_t got = 0;
    while (got < records) {
      auto m = recv();
      if (!m) break;
      got += m->records.size();
      out.push_back(std::move(*m));
    }
    return out;
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  Decoder dec_;
};

void expect_record(const Record &r, const SessionEvent &e) {
  const bool session = dp::is_session_kind(e.kind);
  EXPECT_EQ(r.template_id, session ? kIpfixSessionTemplateId : kIpfixMappingTemplateId);
  EXPECT_EQ(r.f.size(), session ? 9u : 7u);
  EXPECT_EQ(r.f.at(323), e.unix_ms);
  EXPECT_EQ(r.f.at(230), e.kind);
  EXPECT_EQ(r.f.at(4), e.proto);
  EXPECT_EQ(r.f.at(8), ntohl(e.in_ip));
  EXPECT_EQ(r.f.at(225), ntohl(e.nat_ip));
  EXPECT_EQ(r.f.at(7), ntohs(e.in_port));
  EXPECT_EQ(r.f.at(227), ntohs(e.nat_port));
  if (session) {
    EXPECT_EQ(r.f.at(12), ntohl(e.ext_ip));
    EXPECT_EQ(r.f.at(11), ntohs(e.ext_port));
  }
}

bool wait_for(const std::function<bool()> &cond, int ms = 3000) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return cond();
}

// --- tests -----------------------------------------------------------------------------

TEST(IpfixConfig, CollectorSyntaxAndBounds) {
  std::string host;
  uint16_t port = 0;
  IpfixConfig c;
  c.collector = "127.0.0.1:2055";
  ASSERT_TRUE(parse_ipfix_config(c, &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 2055);
  c.collector = "collector.example";
  ASSERT_TRUE(parse_ipfix_config(c, &host, &port).ok());
  EXPECT_EQ(host, "collector.example");
  EXPECT_EQ(port, kIpfixDefaultPort);
  c.collector = "[::1]:9995";
  ASSERT_TRUE(parse_ipfix_config(c, &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 9995);
  c.collector = "fe80::1";
  ASSERT_TRUE(parse_ipfix_config(c, &host, &port).ok());
  EXPECT_EQ(host, "fe80::1");
  EXPECT_EQ(port, kIpfixDefaultPort);
  for (const char *bad : {"", ":4739", "host:", "host:0", "host:65536", "host:12a", "[::1", "[::1]4739", "[]:1"}) {
    c.collector = bad;
    const Status s = parse_ipfix_config(c, &host, &port);
    EXPECT_EQ(s.code(), Code::INVALID_ARGUMENT) << bad;
    EXPECT_NE(s.message().find("collector"), std::string::npos) << s.message();
  }
  c.collector = "127.0.0.1:1";
  c.max_message_bytes = 1401;
  EXPECT_NE(parse_ipfix_config(c, &host, &port).message().find("max_message_bytes"), std::string::npos);
  c.max_message_bytes = kIpfixMinMessageBytes - 1;
  EXPECT_FALSE(parse_ipfix_config(c, &host, &port).ok());
  c.max_message_bytes = 1400;
  c.flush_ms = 0;
  EXPECT_NE(parse_ipfix_config(c, &host, &port).message().find("flush_ms"), std::string::npos);
  c.flush_ms = 100;
  c.template_refresh_s = 0;
  EXPECT_NE(parse_ipfix_config(c, &host, &port).message().find("template_refresh_s"), std::string::npos);
}

TEST_F(IpfixTest, StartRefusesBadConfigAndSecondStart) {
  IpfixConfig c = config();
  c.collector = "127.0.0.1:99999";
  IpfixExporter bad(c);
  EXPECT_EQ(bad.start().code(), Code::INVALID_ARGUMENT);
  IpfixExporter x(config());
  ASSERT_TRUE(x.start().ok());
  EXPECT_EQ(x.start().code(), Code::FAILED_PRECONDITION);
  x.stop();
  x.stop();  // idempotent
}

TEST_F(IpfixTest, TemplatesFirstThenEveryFieldOfEveryKind) {
  SessionEventRing ring(64);
  IpfixExporter x(config());
  x.add_source(&ring);
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());

  auto first = recv();
  ASSERT_TRUE(first.has_value()) << "templates are sent as soon as exporting begins";
  EXPECT_EQ(first->version, 10);
  EXPECT_EQ(first->domain, 77u);
  EXPECT_EQ(first->seq, 0u);
  const auto now_s = uint32_t(std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch()).count());
  EXPECT_LE(first->export_time, now_s);
  EXPECT_GE(first->export_time + 5, now_s);
  ASSERT_EQ(first->templates.size(), 2u);
  const std::vector<std::pair<uint16_t, uint16_t>> mapping = {{323, 8}, {230, 1}, {4, 1}, {8, 4},
                                                              {225, 4}, {7, 2},   {227, 2}};
  auto session = mapping;
  session.push_back({12, 4});
  session.push_back({11, 2});
  EXPECT_EQ(first->templates[kIpfixMappingTemplateId], mapping);
  EXPECT_EQ(first->templates[kIpfixSessionTemplateId], session);

  const std::vector<SessionEvent> sent = {event(dp::kMappingCreate, 1), event(dp::kSessionCreate, 2),
                                          event(dp::kSessionDelete, 3), event(dp::kMappingDelete, 4)};
  for (auto &e : sent) ASSERT_TRUE(ring.push(e));
  auto msgs = recv_records(sent.size());
  std::vector<Record> got;
  for (auto &m : msgs) got.insert(got.end(), m.records.begin(), m.records.end());
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); i++) {
    SCOPED_TRACE(i);
    expect_record(got[i], sent[i]);  // in push order, the set changes with the template
  }
  x.stop();
  const IpfixCounters c = x.counters();
  EXPECT_EQ(c.records_exported, 4u);
  EXPECT_GE(c.messages_sent, 2u);
  EXPECT_EQ(c.send_errors, 0u);
  EXPECT_EQ(c.events_discarded, 0u);
  EXPECT_EQ(x.sequence(), 4u);
}

TEST_F(IpfixTest, TemplatesAreResentEveryRefreshPeriod) {
  SessionEventRing ring(64);
  IpfixConfig c = config();
  c.template_refresh_s = 1;
  IpfixExporter x(c);
  x.add_source(&ring);
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  auto first = recv();
  ASSERT_TRUE(first && first->templates.size() == 2u);
  const auto t0 = std::chrono::steady_clock::now();
  // Data in between must not need templates again.
  ASSERT_TRUE(ring.push(event(dp::kMappingCreate, 9)));
  auto data = recv();
  ASSERT_TRUE(data.has_value());
  EXPECT_TRUE(data->templates.empty());
  EXPECT_EQ(data->records.size(), 1u);
  auto again = recv(3000);
  ASSERT_TRUE(again.has_value()) << "no template refresh within 3 s";
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(again->templates.size(), 2u);
  EXPECT_GT(waited, 0.8);
  EXPECT_LT(waited, 2.5);
  EXPECT_EQ(again->seq, 1u);
}

TEST_F(IpfixTest, SequenceCountsRecordsAcrossMessagesAndFollowsSetSequence) {
  SessionEventRing ring(1024);
  IpfixConfig c = config();
  c.max_message_bytes = 200;  // a few records a message, so there are many messages
  IpfixExporter x(c);
  x.add_source(&ring);
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  auto check_run = [&](uint32_t start, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) ASSERT_TRUE(ring.push(event(i % 2 ? dp::kSessionCreate : dp::kMappingDelete, i)));
    auto msgs = recv_records(n);
    uint32_t expect = start;
    size_t records = 0;
    for (auto &m : msgs) {
      if (m.records.empty()) continue;  // a template-only message says the same number
      EXPECT_EQ(m.seq, expect) << "message sequence must count the records before it";
      expect += uint32_t(m.records.size());
      records += m.records.size();
    }
    EXPECT_EQ(records, n);
    EXPECT_GE(msgs.size(), 3u);
    EXPECT_EQ(x.sequence(), expect);
  };
  auto first = recv();  // templates, sequence 0
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->seq, 0u);
  check_run(0, 40);
  x.start_sequence(1'000'000);  // as a promoted standby continues the old active's stream
  check_run(1'000'000, 30);
  x.start_sequence(0xFFFFFFF0u);  // and mod 2^32
  check_run(0xFFFFFFF0u, 40);
  EXPECT_EQ(x.sequence(), 0x18u);
}

TEST_F(IpfixTest, ManyEventsArePackedIntoFewMessagesWithinTheByteBound) {
  for (uint32_t max_bytes : {300u, 1400u}) {
    SCOPED_TRACE(max_bytes);
    SessionEventRing ring(4096);
    IpfixConfig c = config();
    c.max_message_bytes = max_bytes;
    c.flush_ms = 200;
    IpfixExporter x(c);
    x.add_source(&ring);
    constexpr uint32_t kN = 1000;
    for (uint32_t i = 0; i < kN; i++) ASSERT_TRUE(ring.push(event(dp::kSessionCreate, i)));
    x.set_exporting(true);
    ASSERT_TRUE(x.start().ok());
    auto msgs = recv_records(kN);
    size_t records = 0, data_msgs = 0;
    for (auto &m : msgs) {
      EXPECT_LE(m.bytes, max_bytes);
      records += m.records.size();
      data_msgs += !m.records.empty();
    }
    EXPECT_EQ(records, kN);
    // Full messages hold (max - 16 header - 4 set header) / 28 records; allow one partial.
    const size_t per_msg = (max_bytes - 20) / 28;
    EXPECT_LE(data_msgs, (kN + per_msg - 1) / per_msg + 1);
    x.stop();
    EXPECT_EQ(x.counters().messages_sent, msgs.size());
  }
}

TEST_F(IpfixTest, StandbyDrainsAndDiscardsThenExportsWhenPromoted) {
  SessionEventRing ring(64);
  IpfixExporter x(config());
  x.add_source(&ring);
  ASSERT_TRUE(x.start().ok());
  for (uint32_t i = 0; i < 10; i++) ASSERT_TRUE(ring.push(event(dp::kMappingCreate, i)));
  ASSERT_TRUE(wait_for([&] { return x.counters().events_discarded == 10; }));
  EXPECT_EQ(ring.size(), 0u) << "the standby drains its rings";
  EXPECT_FALSE(recv(300).has_value()) << "a node that is not exporting sends nothing, not even templates";
  EXPECT_EQ(x.sequence(), 0u);

  x.start_sequence(500);
  x.set_exporting(true);
  auto first = recv();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->templates.size(), 2u) << "the new active announces its templates first";
  EXPECT_EQ(first->seq, 500u);
  const SessionEvent e = event(dp::kSessionDelete, 42);
  ASSERT_TRUE(ring.push(e));
  auto data = recv();
  ASSERT_TRUE(data && data->records.size() == 1u);
  expect_record(data->records[0], e);
  EXPECT_EQ(data->seq, 500u);

  x.set_exporting(false);  // demoted again
  ASSERT_TRUE(wait_for([&] { return !x.exporting(); }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(ring.push(event(dp::kMappingDelete, 43)));
  ASSERT_TRUE(wait_for([&] { return x.counters().events_discarded == 11; }));
  EXPECT_FALSE(recv(300).has_value());
  x.stop();
  const IpfixCounters c = x.counters();
  EXPECT_EQ(c.records_exported, 1u);
  EXPECT_EQ(c.events_discarded, 11u);
  EXPECT_EQ(x.sequence(), 501u);
}

SessionEvent event_in(uint8_t kind, uint32_t n, uint32_t epoch) {
  SessionEvent e = event(kind, n);
  e.epoch = epoch;
  return e;
}

// The log's output commit: an event leaves once the standby acknowledged its epoch.
TEST_F(IpfixTest, EventsWaitUntilTheirEpochIsAcknowledged) {
  SessionEventRing ring(64);
  std::atomic<uint64_t> acked{0};
  IpfixExporter x(config());
  x.add_source(&ring);
  x.set_release_source([&] { return acked.load(); });
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  auto first = recv();  // templates
  ASSERT_TRUE(first && first->records.empty());
  const std::vector<SessionEvent> sent = {event_in(dp::kMappingCreate, 1, 7), event_in(dp::kSessionCreate, 2, 7),
                                          event_in(dp::kMappingCreate, 3, 8), event_in(dp::kMappingDelete, 4, 10)};
  for (auto &e : sent) ASSERT_TRUE(ring.push(e));
  EXPECT_FALSE(recv(300).has_value()) << "nothing of an epoch the standby has not acknowledged";
  EXPECT_EQ(x.waiting(), 4u);
  EXPECT_EQ(x.cut_sequence(), 4u) << "the cut counts what is pushed, released or not";
  acked = 7;
  auto m7 = recv_records(2);
  ASSERT_EQ(m7.size(), 1u);
  ASSERT_EQ(m7[0].records.size(), 2u);
  EXPECT_EQ(m7[0].seq, 0u);
  expect_record(m7[0].records[1], sent[1]);
  EXPECT_FALSE(recv(200).has_value()) << "epoch 8 is not acknowledged yet";
  acked = 9;  // epoch 8 is out, epoch 10 still waits: events leave in order and no further
  auto m8 = recv_records(1);
  ASSERT_EQ(m8.size(), 1u);
  EXPECT_EQ(m8[0].seq, 2u);
  expect_record(m8[0].records[0], sent[2]);
  EXPECT_EQ(x.waiting(), 1u);
  x.stop();
  EXPECT_FALSE(recv(200).has_value()) << "stop() does not release what the standby has not acknowledged";
  EXPECT_EQ(x.sequence(), 3u);
}

TEST_F(IpfixTest, EpochsCompareModulo2To32) {
  SessionEventRing ring(16);
  std::atomic<uint64_t> acked{(uint64_t(5) << 32) | 0xFFFFFFF0u};
  IpfixExporter x(config());
  x.add_source(&ring);
  x.set_release_source([&] { return acked.load(); });
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  ASSERT_TRUE(recv().has_value());
  ASSERT_TRUE(ring.push(event_in(dp::kMappingCreate, 1, 0xFFFFFFF0u)));
  ASSERT_TRUE(ring.push(event_in(dp::kMappingCreate, 2, 3)));  // 0x5_0000_0003, after the wrap
  auto a = recv_records(1);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].records.size(), 1u);
  EXPECT_FALSE(recv(200).has_value());
  acked = (uint64_t(6) << 32) | 3u;
  auto b = recv_records(1);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].seq, 1u);
}

/* A failover as the daemon does it: the active's exporter gives cut_sequence() at a cut (the
 * checkpoint carries it); the active dies holding events of an unacknowledged epoch; the new
 * active's exporter starts at the cut. The collector sees the new stream continue at the cut,
 * with a gap of exactly the events the old active never sent, and no number twice. */
TEST_F(IpfixTest, APromotedStandbyContinuesTheSequenceFromTheCut) {
  SessionEventRing ring_a(64), ring_b(64);
  std::atomic<uint64_t> acked_a{0};
  IpfixExporter a(config());
  a.add_source(&ring_a);
  a.set_release_source([&] { return acked_a.load(); });
  a.set_exporting(true);
  ASSERT_TRUE(a.start().ok());
  ASSERT_TRUE(recv().has_value());
  for (uint32_t i = 0; i < 5; i++) ASSERT_TRUE(ring_a.push(event_in(dp::kMappingCreate, i, 1)));
  const uint32_t cut1 = a.cut_sequence();  // epoch 1 closes
  for (uint32_t i = 5; i < 8; i++) ASSERT_TRUE(ring_a.push(event_in(dp::kMappingCreate, i, 2)));
  const uint32_t cut2 = a.cut_sequence();  // epoch 2 closes: the standby applies it, the ack is lost
  EXPECT_EQ(cut1, 5u);
  EXPECT_EQ(cut2, 8u);
  acked_a = 1;
  auto sent_a = recv_records(5);
  size_t n_a = 0;
  for (auto &m : sent_a) n_a += m.records.size();
  EXPECT_EQ(n_a, 5u);
  a.stop();  // SIGKILL, as far as the log goes: epoch 2's events never leave
  EXPECT_FALSE(recv(200).has_value());

  IpfixExporter b(config());
  b.add_source(&ring_b);
  b.set_exporting(true);
  b.start_sequence(cut2);  // the newest cut the standby applied
  ASSERT_TRUE(b.start().ok());
  auto tmpl = recv();
  ASSERT_TRUE(tmpl.has_value());
  EXPECT_EQ(tmpl->seq, cut2);
  ASSERT_TRUE(ring_b.push(event_in(dp::kMappingDelete, 9, 1)));
  auto sent_b = recv_records(1);
  ASSERT_EQ(sent_b.size(), 1u);
  EXPECT_EQ(sent_b[0].seq, 8u) << "continues after the old active's cut: 5..7 are a gap, never reused";
  b.stop();
}

TEST_F(IpfixTest, StartSequenceDiscardsWhatTheRingsHeldBeforeIt) {
  SessionEventRing ring(64);
  std::atomic<uint64_t> acked{0};
  IpfixExporter x(config());
  x.add_source(&ring);
  x.set_release_source([&] { return acked.load(); });
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  ASSERT_TRUE(recv().has_value());
  for (uint32_t i = 0; i < 3; i++) ASSERT_TRUE(ring.push(event_in(dp::kMappingCreate, i, 4)));  // held
  x.start_sequence(100);  // demoted and promoted again: those three belong to the old numbering
  EXPECT_EQ(x.cut_sequence(), 100u);
  ASSERT_TRUE(ring.push(event_in(dp::kMappingCreate, 3, 5)));
  EXPECT_EQ(x.cut_sequence(), 101u);
  acked = 5;
  auto m = recv_records(1);
  ASSERT_EQ(m.size(), 1u);
  ASSERT_EQ(m[0].records.size(), 1u);
  EXPECT_EQ(m[0].seq, 100u);
  expect_record(m[0].records[0], event_in(dp::kMappingCreate, 3, 5));
  x.stop();
  EXPECT_EQ(x.counters().events_discarded, 3u);
  EXPECT_EQ(x.sequence(), 101u);
}

TEST_F(IpfixTest, StopSendsWhatWasPushedBeforeIt) {
  SessionEventRing ring(64);
  IpfixConfig c = config();
  c.flush_ms = 60'000;  // only stop() can send these
  IpfixExporter x(c);
  x.add_source(&ring);
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  ASSERT_TRUE(recv().has_value());  // templates
  for (uint32_t i = 0; i < 5; i++) ASSERT_TRUE(ring.push(event(dp::kSessionCreate, i)));
  x.stop();
  auto m = recv(1000);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->records.size(), 5u);
}

TEST_F(IpfixTest, CountsRingOverflowsOfEverySource) {
  SessionEventRing a(2), b(4);
  IpfixExporter x(config());
  x.add_source(&a);
  x.add_source(&b);
  for (uint32_t i = 0; i < 5; i++) {
    (void)a.push(event(dp::kMappingCreate, i));
    (void)b.push(event(dp::kMappingCreate, i));
  }
  EXPECT_EQ(x.counters().ring_overflows, 3u + 1u);
}

TEST_F(IpfixTest, SendFailuresAreCountedNotFatal) {
  SessionEventRing ring(64);
  IpfixConfig c = config();
  // The limited broadcast address without SO_BROADCAST: the kernel refuses every send
  // (EACCES), and nothing leaves the machine.
  c.collector = "255.255.255.255:4739";
  IpfixExporter x(c);
  x.add_source(&ring);
  x.set_exporting(true);
  ASSERT_TRUE(x.start().ok());
  for (uint32_t i = 0; i < 3; i++) ASSERT_TRUE(ring.push(event(dp::kMappingCreate, i)));
  ASSERT_TRUE(wait_for([&] { return x.sequence() == 3u; }));
  x.stop();
  const IpfixCounters k = x.counters();
  EXPECT_GE(k.send_errors, 1u);
  EXPECT_EQ(k.messages_sent, 0u);
  EXPECT_EQ(k.records_exported, 0u);
  EXPECT_EQ(x.sequence(), 3u) << "lost records still count, so a collector sees the gap";
}

}  // namespace
}  // namespace ftpair
