/* NAT session logging as IPFIX (RFC 7011) over UDP, with RFC 8158's NAT44 templates.
 *
 * The workers push SessionEvents into their rings (dataplane/session_log.h); one exporter
 * thread drains every ring, packs the events as data records into messages of at most
 * max_message_bytes, and sends a message when it is full or its oldest record has waited
 * flush_ms. Only the active node exports: on the standby set_exporting(false) makes the
 * thread drain and discard (counted), so rings never back up.
 *
 * Two templates, sent when exporting begins and again every template_refresh_s (UDP has no
 * session, so a collector that restarts learns them again; RFC 7011 §8.4):
 *   256 mapping (NAT44 BIB): observationTimeMilliseconds(323) natEvent(230)
 *       protocolIdentifier(4) sourceIPv4Address(8) postNATSourceIPv4Address(225)
 *       sourceTransportPort(7) postNAPTSourceTransportPort(227)                 22 bytes
 *   257 session: the same, then destinationIPv4Address(12) destinationTransportPort(11)  28 bytes
 * natEvent carries RFC 8158's codes: 1/2 NAT44 session create/delete, 6/7 NAT44 BIB
 * create/delete.
 *
 * Output commit for the log: an event leaves only once the standby has acknowledged the
 * epoch it happened in (set_release_source; without one, at once). So the old active never
 * exports an event the new one does not know the number of.
 *
 * The header's sequence number is the count of data records before the message, mod 2^32
 * (RFC 7011 §3.1). Every event released while exporting counts, including those of a lost
 * message, so the collector sees a loss as a gap. At each checkpoint the daemon takes
 * cut_sequence() with the workers parked (the number the sequence reaches once the cut's
 * events are out) and replicates it; a promoted standby calls start_sequence() with it. The
 * collector then sees one stream from the pair: a gap where the old active died holding
 * events, never a number twice.
 *
 * Failures (collector unresolvable, send refused) are counted, logged at most every 10 s,
 * and never block a worker: the worst case is a full ring, which the worker counts. */
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "dataplane/session_log.h"

namespace ftpair {

constexpr uint16_t kIpfixDefaultPort = 4739;
constexpr uint16_t kIpfixMappingTemplateId = 256;
constexpr uint16_t kIpfixSessionTemplateId = 257;
constexpr uint32_t kIpfixMinMessageBytes = 128;   // header + both templates + one record
constexpr uint32_t kIpfixMaxMessageBytes = 1400;  // fits a 1500-byte path with IPv6 and UDP

struct IpfixConfig {
  std::string collector;             // "host:port", "[v6addr]:port" or "host" (port 4739)
  uint32_t observation_domain = 0;
  uint32_t max_message_bytes = kIpfixMaxMessageBytes;  // kIpfixMinMessageBytes..kIpfixMaxMessageBytes
  uint32_t flush_ms = 100;           // longest a record waits in a partly filled message, > 0
  uint32_t template_refresh_s = 60;  // template resend period, > 0
};

struct IpfixCounters {
  uint64_t records_exported = 0;  // data records in messages the kernel accepted
  uint64_t messages_sent = 0;     // messages the kernel accepted (template-only ones too)
  uint64_t send_errors = 0;       // messages lost: collector unresolved or sendto failed
  uint64_t events_discarded = 0;  // drained while not exporting, or of an unknown kind
  uint64_t ring_overflows = 0;    // sum over the sources: events their workers could not push
};

/* Checks cfg: the collector's syntax (not its resolution), the byte bound, the periods.
 * INVALID_ARGUMENT names the field and the reason. On success fills *host and *port. */
Status parse_ipfix_config(const IpfixConfig &cfg, std::string *host, uint16_t *port);

class IpfixExporter {
 public:
  explicit IpfixExporter(IpfixConfig cfg);
  ~IpfixExporter();  // stop()
  IpfixExporter(const IpfixExporter &) = delete;
  IpfixExporter &operator=(const IpfixExporter &) = delete;

  // Adds a ring to drain (one per worker). Only before start(); the ring must outlive stop().
  void add_source(dp::SessionEventRing *ring);

  /* Validates the config, opens nothing yet and starts the thread. INVALID_ARGUMENT for a bad
   * config, FAILED_PRECONDITION when already started. An unresolvable collector is not an
   * error here: the thread logs it, retries every 5 s and counts the messages it loses. */
  Status start();
  // Drains the rings one last time, sends what is pending (if exporting), joins. Idempotent.
  void stop();

  // Active: export. Not active: drain and discard. Starts false. Any thread.
  void set_exporting(bool on) { exporting_.store(on, std::memory_order_release); }
  bool exporting() const { return exporting_.load(std::memory_order_acquire); }

  /* Only before start(): f() is the newest epoch whose events may leave (the standby has
   * acknowledged it; UINT64_MAX for all). Called from the exporter thread at each drain. */
  void set_release_source(std::function<uint64_t()> f) { release_ = std::move(f); }

  /* Records released so far, mod 2^32: the next message's sequence number. Records of a
   * message that was lost count too, so the collector sees the gap. Any thread. */
  uint32_t sequence() const { return seq_.load(std::memory_order_acquire); }
  /* The stream continues at s from the events pushed after this call; those already in the
   * rings are discarded (counted). A promoted standby calls it with the old active's
   * replicated cut, while no worker pushes. Any thread. */
  void start_sequence(uint32_t s);
  /* What sequence() will be once every event pushed so far is released: exact when no worker
   * is pushing (the daemon calls it with them parked, at the cut). Any thread. */
  uint32_t cut_sequence() const;
  // Events pushed but not yet released (waiting for the standby's acknowledgement, or read).
  uint64_t waiting() const;

  IpfixCounters counters() const;

 private:
  void run();
  void drain_once(bool exporting, bool *busy);
  void take_anchor();
  void add_record(const dp::SessionEvent &e, int64_t now_ns);
  void open_message(int64_t now_ns);
  void close_set();
  void send_message();
  bool resolve(int64_t now_ns);

  IpfixConfig cfg_;
  std::string host_;
  uint16_t port_ = 0;
  std::vector<dp::SessionEventRing *> sources_;
  std::function<uint64_t()> release_;

  // The sequence's anchor: start_sequence()'s value and each ring's pushed() at that call.
  mutable std::mutex anchor_mu_;
  uint32_t anchor_seq_ = 0;
  std::vector<uint64_t> anchor_pos_;  // per source
  uint64_t anchor_gen_ = 0;           // bumped by each start_sequence()

  // Exporter thread only.
  std::vector<uint8_t> buf_;        // the message being built, max_message_bytes long
  size_t len_ = 0;                  // bytes used; 0 = no message open
  size_t set_off_ = 0;              // offset of the open data set's header; 0 = none
  uint16_t set_id_ = 0;
  uint32_t msg_records_ = 0;
  int64_t msg_opened_ns_ = 0;
  bool templates_due_ = true;
  int64_t next_templates_ns_ = 0;
  int fd_ = -1;
  int64_t next_resolve_ns_ = 0;
  sockaddr_storage dest_{};         // the resolved collector
  socklen_t dest_len_ = 0;
  int64_t last_warn_ns_ = 0;
  uint64_t errors_since_warn_ = 0;
  std::vector<uint64_t> popped_;      // per source: events taken off the ring
  std::vector<uint64_t> skip_until_;  // per source: events before this index are discarded
  uint64_t anchor_gen_seen_ = 0;
  uint32_t msg_seq_ = 0;              // the sequence at the open message's first record

  std::atomic<bool> exporting_{false};
  std::atomic<uint32_t> seq_{0};
  std::atomic<uint64_t> records_exported_{0}, messages_sent_{0}, send_errors_{0}, events_discarded_{0};

  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;  // under mu_
  bool started_ = false;
};

}  // namespace ftpair
