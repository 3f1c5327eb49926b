// The IPFIX session-log exporter (control/ipfix.h).
#include "control/ipfix.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iterator>

#include "common/clock.h"
#include "common/log.h"

namespace ftpair {

namespace {

auto &L = log::component("ipfix");

constexpr uint16_t kVersion = 10;
constexpr size_t kHeaderBytes = 16;
constexpr size_t kSetHeaderBytes = 4;
constexpr uint16_t kTemplateSetId = 2;
constexpr size_t kDrainBatch = 256;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kResolveRetryNs = 5'000 * kMs;
constexpr int64_t kWarnEveryNs = 10'000 * kMs;

// Information elements (IANA IPFIX registry), in template order.
struct Field {
  uint16_t ie;
  uint16_t len;
};
constexpr Field kMappingFields[] = {
    {323, 8},  // observationTimeMilliseconds
    {230, 1},  // natEvent
    {4, 1},    // protocolIdentifier
    {8, 4},    // sourceIPv4Address
    {225, 4},  // postNATSourceIPv4Address
    {7, 2},    // sourceTransportPort
    {227, 2},  // postNAPTSourceTransportPort
};
constexpr Field kSessionExtra[] = {
    {12, 4},  // destinationIPv4Address
    {11, 2},  // destinationTransportPort
};
constexpr size_t kMappingRecordBytes = 22;
constexpr size_t kSessionRecordBytes = 28;
constexpr size_t kMappingFieldCount = std::size(kMappingFields);
constexpr size_t kSessionFieldCount = kMappingFieldCount + std::size(kSessionExtra);
// Set header, then per template a 4-byte record header and 4 bytes per field.
constexpr size_t kTemplateSetBytes = kSetHeaderBytes + 4 + 4 * kMappingFieldCount + 4 + 4 * kSessionFieldCount;
static_assert(kHeaderBytes + kTemplateSetBytes + kSetHeaderBytes + kSessionRecordBytes <= kIpfixMinMessageBytes);

inline uint8_t *put16(uint8_t *p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
  return p + 2;
}
inline uint8_t *put32(uint8_t *p, uint32_t v) {
  p = put16(p, uint16_t(v >> 16));
  return put16(p, uint16_t(v));
}
inline uint8_t *put64(uint8_t *p, uint64_t v) {
  p = put32(p, uint32_t(v >> 32));
  return put32(p, uint32_t(v));
}
// Copies a value that is already in network order.
template <typename T> inline uint8_t *put_raw(uint8_t *p, T v) {
  std::memcpy(p, &v, sizeof(v));
  return p + sizeof(v);
}

uint8_t *put_template(uint8_t *p, uint16_t id, bool session) {
  p = put16(p, id);
  p = put16(p, uint16_t(session ? kSessionFieldCount : kMappingFieldCount));
  for (const Field &f : kMappingFields) p = put16(put16(p, f.ie), f.len);
  if (session)
    for (const Field &f : kSessionExtra) p = put16(put16(p, f.ie), f.len);
  return p;
}

bool parse_port(const std::string &s, uint16_t *port) {
  if (s.empty() || s.size() > 5) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + uint32_t(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *port = uint16_t(v);
  return true;
}

}  // namespace

Status parse_ipfix_config(const IpfixConfig &cfg, std::string *host, uint16_t *port) {
  const std::string &c = cfg.collector;
  std::string h, p;
  if (c.empty()) return InvalidArgument("collector: empty (want host:port)");
  if (c[0] == '[') {
    const size_t close = c.find(']');
    if (close == std::string::npos) return InvalidArgument("collector: '" + c + "' has '[' without ']'");
    h = c.substr(1, close - 1);
    if (close + 1 < c.size()) {
      if (c[close + 1] != ':') return InvalidArgument("collector: '" + c + "': want [addr]:port");
      p = c.substr(close + 2);
      if (p.empty()) return InvalidArgument("collector: '" + c + "': empty port");
    }
  } else {
    const size_t colon = c.rfind(':');
    if (colon != std::string::npos && c.find(':') == colon) {
      h = c.substr(0, colon);
      p = c.substr(colon + 1);
      if (p.empty()) return InvalidArgument("collector: '" + c + "': empty port");
    } else {
      h = c;  // a bare host name, IPv4 address or IPv6 address
    }
  }
  if (h.empty()) return InvalidArgument("collector: '" + c + "': empty host");
  uint16_t port_v = kIpfixDefaultPort;
  if (!p.empty() && !parse_port(p, &port_v))
    return InvalidArgument("collector: '" + c + "': port '" + p + "' is not 1..65535");
  if (cfg.max_message_bytes < kIpfixMinMessageBytes || cfg.max_message_bytes > kIpfixMaxMessageBytes)
    return InvalidArgument("max_message_bytes: " + std::to_string(cfg.max_message_bytes) + " is outside " +
                           std::to_string(kIpfixMinMessageBytes) + ".." + std::to_string(kIpfixMaxMessageBytes));
  if (cfg.flush_ms == 0) return InvalidArgument("flush_ms: must be > 0");
  if (cfg.template_refresh_s == 0) return InvalidArgument("template_refresh_s: must be > 0 (UDP needs resends)");
  *host = h;
  *port = port_v;
  return Status::Ok();
}

IpfixExporter::IpfixExporter(IpfixConfig cfg) : cfg_(std::move(cfg)) {}

IpfixExporter::~IpfixExporter() { stop(); }

void IpfixExporter::add_source(dp::SessionEventRing *ring) {
  if (started_) {
    L.error("add_source after start() ignored: the exporter thread reads its sources unlocked");
    return;
  }
  if (!ring) return;
  sources_.push_back(ring);
  popped_.push_back(0);
  skip_until_.push_back(0);
  std::lock_guard<std::mutex> g(anchor_mu_);
  anchor_pos_.push_back(ring->pushed());
}

void IpfixExporter::start_sequence(uint32_t s) {
  std::lock_guard<std::mutex> g(anchor_mu_);
  anchor_seq_ = s;
  for (size_t i = 0; i < sources_.size(); i++) anchor_pos_[i] = sources_[i]->pushed();
  anchor_gen_++;
  if (!started_) {
    // No thread yet: take the anchor here, so sequence() says it at once.
    seq_.store(s, std::memory_order_release);
    skip_until_ = anchor_pos_;
    anchor_gen_seen_ = anchor_gen_;
  }
}

uint32_t IpfixExporter::cut_sequence() const {
  std::lock_guard<std::mutex> g(anchor_mu_);
  uint32_t s = anchor_seq_;
  for (size_t i = 0; i < sources_.size(); i++) s += uint32_t(sources_[i]->pushed() - anchor_pos_[i]);
  return s;
}

uint64_t IpfixExporter::waiting() const {
  uint64_t n = 0;
  for (const auto *r : sources_) n += r->size();
  return n;
}

Status IpfixExporter::start() {
  if (started_) return FailedPrecondition("ipfix exporter already started");
  Status s = parse_ipfix_config(cfg_, &host_, &port_);
  if (!s.ok()) return s;
  buf_.assign(cfg_.max_message_bytes, 0);
  quit_ = false;
  started_ = true;
  thread_ = std::thread([this] { run(); });
  L.info("exporting NAT session events to {} (port {}), domain {}, {} source(s), {} ms flush, "
         "templates every {} s",
         host_, port_, cfg_.observation_domain, sources_.size(), cfg_.flush_ms, cfg_.template_refresh_s);
  return Status::Ok();
}

void IpfixExporter::stop() {
  if (!started_) return;
  {
    std::lock_guard<std::mutex> g(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  dest_len_ = 0;
  started_ = false;
}

IpfixCounters IpfixExporter::counters() const {
  IpfixCounters c;
  c.records_exported = records_exported_.load(std::memory_order_relaxed);
  c.messages_sent = messages_sent_.load(std::memory_order_relaxed);
  c.send_errors = send_errors_.load(std::memory_order_relaxed);
  c.events_discarded = events_discarded_.load(std::memory_order_relaxed);
  for (const auto *r : sources_) c.ring_overflows += r->overflows();
  return c;
}

bool IpfixExporter::resolve(int64_t now_ns) {
  if (dest_len_) return true;
  if (now_ns < next_resolve_ns_) return false;
  next_resolve_ns_ = now_ns + kResolveRetryNs;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo *res = nullptr;
  const std::string port = std::to_string(port_);
  const int rc = ::getaddrinfo(host_.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    L.warn("collector {} unresolvable: {} (retrying every {} s; messages are lost meanwhile)", host_,
           gai_strerror(rc), kResolveRetryNs / 1'000'000'000);
    return false;
  }
  const int fd = ::socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    L.warn("collector {}: socket: {}", host_, std::strerror(errno));
    ::freeaddrinfo(res);
    return false;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  std::memcpy(&dest_, res->ai_addr, res->ai_addrlen);
  dest_len_ = socklen_t(res->ai_addrlen);
  char addr[INET6_ADDRSTRLEN] = "?";
  const void *a = res->ai_family == AF_INET6 ? static_cast<const void *>(&reinterpret_cast<sockaddr_in6 *>(res->ai_addr)->sin6_addr)
                                              : static_cast<const void *>(&reinterpret_cast<sockaddr_in *>(res->ai_addr)->sin_addr);
  ::inet_ntop(res->ai_family, a, addr, sizeof(addr));
  L.info("collector {} resolved to {} port {}", host_, addr, port_);
  ::freeaddrinfo(res);
  return true;
}

void IpfixExporter::open_message(int64_t now_ns) {
  len_ = kHeaderBytes;
  set_off_ = 0;
  set_id_ = 0;
  msg_records_ = 0;
  msg_opened_ns_ = now_ns;
  if (!templates_due_) return;
  uint8_t *p = buf_.data() + len_;
  p = put16(p, kTemplateSetId);
  p = put16(p, uint16_t(kTemplateSetBytes));
  p = put_template(p, kIpfixMappingTemplateId, false);
  p = put_template(p, kIpfixSessionTemplateId, true);
  len_ = size_t(p - buf_.data());
  templates_due_ = false;
  next_templates_ns_ = now_ns + int64_t(cfg_.template_refresh_s) * 1000 * kMs;
}

void IpfixExporter::close_set() {
  if (!set_off_) return;
  put16(buf_.data() + set_off_ + 2, uint16_t(len_ - set_off_));
  set_off_ = 0;
  set_id_ = 0;
}

void IpfixExporter::add_record(const dp::SessionEvent &e, int64_t now_ns) {
  const bool session = dp::is_session_kind(e.kind);
  const uint16_t tid = session ? kIpfixSessionTemplateId : kIpfixMappingTemplateId;
  const size_t rec = session ? kSessionRecordBytes : kMappingRecordBytes;
  auto need = [&] { return rec + (set_id_ == tid ? 0 : kSetHeaderBytes); };
  if (len_ && len_ + need() > buf_.size()) send_message();
  if (!len_) open_message(now_ns);
  if (set_id_ != tid) {
    close_set();
    set_off_ = len_;
    set_id_ = tid;
    put16(buf_.data() + len_, tid);
    len_ += kSetHeaderBytes;  // the length is written by close_set()
  }
  if (msg_records_ == 0) msg_seq_ = seq_.load(std::memory_order_relaxed);
  seq_.fetch_add(1, std::memory_order_release);
  uint8_t *p = buf_.data() + len_;
  p = put64(p, e.unix_ms);
  *p++ = e.kind;
  *p++ = e.proto;
  p = put_raw(p, e.in_ip);
  p = put_raw(p, e.nat_ip);
  p = put_raw(p, e.in_port);
  p = put_raw(p, e.nat_port);
  if (session) {
    p = put_raw(p, e.ext_ip);
    p = put_raw(p, e.ext_port);
  }
  len_ = size_t(p - buf_.data());
  msg_records_++;
}

void IpfixExporter::send_message() {
  if (!len_) return;
  close_set();
  // The records before this message: before its first record, or all so far (templates only).
  const uint32_t seq = msg_records_ ? msg_seq_ : seq_.load(std::memory_order_relaxed);
  uint8_t *p = buf_.data();
  p = put16(p, kVersion);
  p = put16(p, uint16_t(len_));
  p = put32(p, uint32_t(unix_ns() / 1'000'000'000));
  p = put32(p, seq);
  put32(p, cfg_.observation_domain);

  const int64_t now = mono_ns();
  const char *why = nullptr;
  int err = 0;
  if (!resolve(now)) {
    why = "collector unresolved";
  } else if (::sendto(fd_, buf_.data(), len_, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr *>(&dest_),
                      dest_len_) != ssize_t(len_)) {
    why = "sendto";
    err = errno;
  }
  if (why) {
    send_errors_.fetch_add(1, std::memory_order_relaxed);
    errors_since_warn_++;
    if (now - last_warn_ns_ >= kWarnEveryNs) {
      L.warn("message of {} record(s) lost: {}{}{} ({} lost since the last warning)", msg_records_, why,
             err ? ": " : "", err ? std::strerror(err) : "", errors_since_warn_);
      last_warn_ns_ = now;
      errors_since_warn_ = 0;
    }
  } else {
    messages_sent_.fetch_add(1, std::memory_order_relaxed);
    records_exported_.fetch_add(msg_records_, std::memory_order_relaxed);
  }
  len_ = 0;
  msg_records_ = 0;
}

void IpfixExporter::take_anchor() {
  std::lock_guard<std::mutex> g(anchor_mu_);
  if (anchor_gen_seen_ == anchor_gen_) return;
  send_message();  // what is open belongs to the old numbering
  seq_.store(anchor_seq_, std::memory_order_release);
  skip_until_ = anchor_pos_;
  anchor_gen_seen_ = anchor_gen_;
}

void IpfixExporter::drain_once(bool exporting, bool *busy) {
  take_anchor();
  dp::SessionEvent batch[kDrainBatch];
  const int64_t now = mono_ns();
  const uint64_t release = release_ ? release_() : UINT64_MAX;
  for (size_t s = 0; s < sources_.size(); s++) {
    dp::SessionEventRing *r = sources_[s];
    const size_t n = release == UINT64_MAX ? r->pop_bulk(batch, kDrainBatch)
                                           : r->pop_bulk_through(batch, kDrainBatch, uint32_t(release));
    if (n == kDrainBatch) *busy = true;
    for (size_t i = 0; i < n; i++) {
      const bool before_anchor = popped_[s]++ < skip_until_[s];
      if (exporting && !before_anchor && dp::is_known_kind(batch[i].kind)) {
        add_record(batch[i], now);
      } else {
        // An unknown kind while exporting still takes its number: cut_sequence() counted it.
        if (exporting && !before_anchor) seq_.fetch_add(1, std::memory_order_release);
        events_discarded_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
}

void IpfixExporter::run() {
  const int64_t flush_ns = int64_t(cfg_.flush_ms) * kMs;
  // Poll often enough to meet the flush deadline, and at least every 10 ms so rings drain.
  const auto poll = std::chrono::milliseconds(std::max<uint32_t>(1, std::min<uint32_t>(cfg_.flush_ms / 2, 10)));
  bool was_exporting = false;
  (void)resolve(mono_ns());
  for (;;) {
    {
      std::unique_lock<std::mutex> g(mu_);
      if (quit_) break;
    }
    const bool exporting = exporting_.load(std::memory_order_acquire);
    if (exporting != was_exporting) {
      if (exporting) {
        templates_due_ = true;  // a new active announces its templates first
      } else {
        send_message();  // what was drained while active still goes out
      }
      was_exporting = exporting;
    }
    bool busy = false;
    drain_once(exporting, &busy);
    const int64_t now = mono_ns();
    if (exporting && now >= next_templates_ns_) templates_due_ = true;
    if (exporting && templates_due_) {
      send_message();  // any open message first: the templates open the next one
      open_message(now);
      send_message();
    }
    if (len_ && now - msg_opened_ns_ >= flush_ns) send_message();
    if (busy) continue;
    std::unique_lock<std::mutex> g(mu_);
    cv_.wait_for(g, poll, [this] { return quit_; });
  }
  // Last drain, so a clean stop loses nothing that was pushed before it.
  const bool exporting = exporting_.load(std::memory_order_acquire);
  if (exporting && !was_exporting) templates_due_ = true;
  bool busy = true;
  while (busy) {
    busy = false;
    drain_once(exporting, &busy);
  }
  send_message();
}

}  // namespace ftpair
