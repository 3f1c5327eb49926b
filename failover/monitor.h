/* The heartbeat monitor: beats both ways over ftpair.v1.Peer every interval.
 *
 * Each node calls the other's Heartbeat with its own beat; the reply is the peer's beat.
 * The peer counts as heard when either direction succeeds. Decisions stay with the host:
 * the monitor reports every beat heard and, each interval, whether the peer has been
 * silent for more than miss_threshold intervals.
 *
 * Fast beats (udp_port set): the same Beat also travels as a UDP datagram every interval,
 * sent and received by two threads of their own at real-time priority (SCHED_FIFO, when
 * the process may use it), like BFD beside a routing protocol. A busy machine delays a
 * normal thread, an RPC and its HTTP/2 machinery by tens of milliseconds; these threads
 * run within microseconds of their timer, so the silence threshold can be tight without
 * false alarms. The silence check then runs on the sending thread, every interval.
 *
 * Real-time priority does not help when the hypervisor holds a vCPU back: everything on it
 * stops, its timers too, for tens of milliseconds on a shared host (measured: up to 100 ms,
 * most often one vCPU at a time). So with two CPUs or more the two threads run on two
 * different CPUs (off the workers' cores where possible), and each covers for the other:
 *   - the receiving thread sends a beat itself when the sender is half an interval late, so
 *     one CPU held back does not silence this node;
 *   - before the sending thread counts an interval as silent, it reads the socket itself:
 *     beats that wait there unread mean our receiver was held back, not that the peer fell
 *     silent; and a probe waiting for its answer reads it too. (The authentication's replay
 *     window is opened under a lock of its own.)
 * Both are counted (backup_beats(), beats_read_by_check()). The threads are pinned only when
 * they run at real-time priority.
 * Datagrams are accepted only from the configured peer address and, with beat_keys, only
 * with a valid HMAC tag and a sequence number not seen before (failover/beat_auth.h);
 * anything else is counted by reason and ignored. Without keys anyone who can send from the
 * peer's address speaks for the peer.
 *
 * Peer domain events (attach_peer_events, optional): the hypervisor's word that the peer's
 * domain stopped running (failover/peer_events.h), a faster signal than K silent intervals.
 * They start and stop with the beats. */
#pragma once

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>

#include <grpcpp/grpcpp.h>

#include "failover/beat_auth.h"
#include "failover/peer_events.h"
#include "peer.grpc.pb.h"

namespace ftpair::fo {

struct MonitorConfig {
  std::string peer;  // host:port
  std::chrono::milliseconds interval{10};
  uint32_t miss_threshold = 4;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Fast beats: 0 = off. Both nodes use the same port; bind to the local management address.
  uint16_t udp_port = 0;
  std::string udp_bind;  // local IPv4 address
  std::string udp_peer;  // the peer's IPv4 address
  bool realtime = true;  // SCHED_FIFO for the two beat threads, when permitted
  /* The two beat threads on two different CPUs (the last two allowed, off avoid_cpus when two
   * others remain), when the process may use two or more and they run at real-time priority. */
  bool spread = true;
  std::vector<int> avoid_cpus;  // the dataplane workers' cores
  std::vector<int> beat_cpus;   // {sending, receiving} to pin them there instead (tests); empty: chosen
  /* Fast-beat keys (failover/beat_auth.h): the first signs, all verify. Empty: datagrams
   * carry no tag and any well-formed one from the peer's address counts (the daemon warns). */
  std::vector<BeatKey> beat_keys;
};


// The datagram: "FTPB", version 1, three zero bytes, then the Beat in protobuf encoding.
inline constexpr size_t kBeatHeader = 8;
inline constexpr size_t kBeatMaxDatagram = 1024;
class BeatAuth;
/* The sequence number of one of this sender's beat datagrams, as an ICMP error quotes it back
 * (IP_RECVERR's data: a Linux host quotes up to 520 bytes of a UDP payload; RFC 792 asks for
 * only 8). Sealed (auth): the whole datagram, this instance's nonce and a genuine tag, so a
 * refusal cannot be forged without a key. Plain (auth null): its start, up to the sequence;
 * anyone can forge that, as they can forge plain beats. 0 when the quote is not of one. */
uint64_t quoted_beat_sequence(const uint8_t *quote, size_t n, const BeatAuth *auth);
std::string encode_beat_datagram(const v1::Beat &b);
// The same into buf[0, cap), allocating nothing: its length, or 0 when it does not fit.
size_t encode_beat_into(const v1::Beat &b, uint8_t *buf, size_t cap);
// Returns COUNT on success.
BeatReject decode_beat_datagram(const uint8_t *p, size_t n, v1::Beat *out);

struct MonitorHooks {
  std::function<void(v1::Beat *)> fill_local;
  std::function<void(const v1::Beat &)> on_peer_beat;
  // Called every interval while the peer has been silent past the threshold.
  std::function<void(const std::string &reason)> on_peer_silent;
  // Probe replies (fast beats): adds what the prober asks about (the dataplane workers).
  std::function<void(v1::Beat *)> fill_probe_reply;
};

class Monitor {
 public:
  Monitor(MonitorConfig cfg, MonitorHooks hooks);
  ~Monitor();
  void start();
  void stop();
  /* Before start(), fast beats only: sends b (stamped as every beat is) to the peer now, on the
   * fast-beat socket, opened here. A node that has just started says so at once, in one datagram,
   * while its start goes on: an active whose stream to this address is old or down connects
   * again without waiting for an RPC (in a TCG guest a first Heartbeat on a new channel took
   * 0.2 s to arrive). False when it was not sent. */
  bool announce(v1::Beat b);
  // Before start(): the peer domain's lifecycle events, started and stopped with the beats.
  void attach_peer_events(std::unique_ptr<PeerEvents> events);
  const PeerEvents *peer_events() const { return events_.get(); }
  // The Peer.Heartbeat handler: records the peer's beat, fills ours.
  void heard(const v1::Beat &peer_beat, v1::Beat *reply);

  bool ever_heard() const { return ever_heard_.load(); }
  /* Counts the peer as heard now: a monitor that starts in place of another one (after an
   * upgrade's handover) gets a full silence window, not an old or no last beat. */
  void assume_heard();
  bool peer_silent() const;
  double silence_seconds() const;
  uint64_t misses() const { return misses_.load(); }
  uint64_t beats_sent() const { return sent_.load(); }
  v1::Beat last_peer_beat() const;  // may be one beat behind (record())
  uint64_t last_peer_generation() const;  // the generation of the newest beat heard
  const MonitorConfig &config() const { return cfg_; }
  // Fast beats: datagrams sent / accepted, and ignored by reason.
  uint64_t udp_sent() const { return udp_sent_.load(); }
  uint64_t udp_heard() const { return udp_heard_.load(); }
  uint64_t udp_rejected(BeatReject r) const { return udp_rejected_[static_cast<size_t>(r)].load(); }
  // True when fast beats are signed and verified (beat_keys configured).
  bool authenticated() const { return auth_ != nullptr; }
  /* Key rotation (SIGHUP): the fast beats sign with keys[0] and verify with every key from now
   * on. FAILED_PRECONDITION when the beats run unauthenticated (turning authentication on or
   * off needs a restart: the peer would refuse or be refused). */
  Status set_beat_keys(std::vector<BeatKey> keys);
  /* Asks the peer over the fast beats and waits up to timeout for its answer (a beat whose
   * probe_reply matches, sent by the peer's receiving thread the moment the probe arrives).
   * The probe is sent again at a third and two thirds of the timeout (a datagram lost is not
   * a peer dead). ANSWERED fills reply; REFUSED: the peer's host answered one of this probe's
   * datagrams, or of the beats sent since it began, with ICMP port unreachable (its daemon is
   * gone), at once rather than at the timeout. A refusal is matched to the datagram it quotes
   * (its sequence number, between the probe's start and now), so the refusal of a beat sent
   * before the probe (the peer's daemon restarting) does not count, nor, with keys, a forged
   * one. Hosts limit their port unreachables (Linux: 6, then one a second per destination,
   * loopback exempt; and 1000 a second in all): the refusal of a peer long gone may not come
   * within the probe. HEARD: no
   * answer, but another authentic fast beat of the peer arrived meanwhile (alive, slow);
   * TIMEOUT: nothing. NO_BEATS without fast beats. One caller at a time. */
  enum class ProbeResult { ANSWERED, REFUSED, HEARD, TIMEOUT, NO_BEATS };
  ProbeResult probe(std::chrono::microseconds timeout, v1::Beat *reply);
  uint64_t probes_refused() const { return probes_refused_.load(); }
  // ICMP port unreachables from the peer's address read, whether or not they answered a probe.
  uint64_t refusals_read() const { return refusals_read_.load(); }
  uint64_t probes_answered() const { return probes_answered_.load(); }
  // Beats sent by the receiving thread because the sending one was late (its CPU held back).
  uint64_t backup_beats() const { return backup_beats_.load(); }
  // Beats not sent because they would not fit a datagram (kBeatMaxDatagram).
  uint64_t oversize_beats() const { return udp_oversize_.load(); }
  // Peer beats the hook did not get because another thread was posting one (it gets the next).
  uint64_t hook_skipped() const { return hook_skipped_.load(); }
  // Peer beats the silence check found waiting unread (the receiving thread held back).
  uint64_t beats_read_by_check() const { return read_by_check_.load(); }
  // The CPUs the sending and receiving threads run on (-1: not pinned; pinned only at
  // real-time priority).
  int tx_cpu() const { return tx_cpu_.load(); }
  int rx_cpu() const { return rx_cpu_.load(); }
  // True when the fast-beat threads got real-time priority.
  bool realtime() const { return realtime_ok_.load(); }
  // Empty when fast beats run (or are off); else why they could not start.
  std::string udp_error() const;

 private:
  bool open_udp(std::string *err);  // the fast-beat socket, bound (once)
  void loop();
  void udp_tx_loop();
  void udp_rx_loop();
  /* Reads every ICMP error queued on the socket (IP_RECVERR, any thread). A port unreachable
   * from the peer that quotes a datagram sent since the probe began answers it (refusal()).
   * holds_probe_mu: the caller is the prober, under probe_mu_. */
  void drain_icmp_errors(bool holds_probe_mu);
  void refusal(const uint8_t *quote, size_t n, bool holds_probe_mu);
  // Reads every datagram waiting in the socket, without blocking; returns the peer's beats
  // accepted. Any thread (the receiver, the silence check, a waiting probe) without probe_mu_.
  unsigned read_pending();
  // One datagram: true when it was the peer's beat, accepted (else counted as rejected).
  bool take_datagram(const uint8_t *buf, size_t n, const sockaddr_in &from);
  void pin(std::atomic<int> &cpu, const char *what);
  void check_silence();
  bool record(const v1::Beat &b);  // false: not all published (publish())
  // last_beat_ and the hook's beat, each if its lock is free; true if both were (record()).
  bool publish(const v1::Beat &b);
  // A datagram's beat not published is kept by the reading thread (Scratch), published again by
  // repost() from its next read or loop.
  void keep_unpublished(const v1::Beat &b, bool published);
  void repost();
  std::atomic<uint64_t> published_{0};

  MonitorConfig cfg_;
  MonitorHooks hooks_;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::atomic<int64_t> last_heard_ns_{0};  // steady clock
  // check_silence() (one caller thread at a time): the last beat it saw, and its checks since.
  std::atomic<int64_t> heard_at_check_{0};
  std::atomic<uint32_t> silent_checks_{0};
  std::atomic<bool> ever_heard_{false};
  std::atomic<uint64_t> misses_{0}, sent_{0}, seq_{0};
  mutable std::mutex beat_mu_;
  v1::Beat last_beat_;
  std::atomic<uint64_t> last_generation_{0};
  // fast beats
  int udp_fd_ = -1;
  std::atomic<bool> announce_only_fd_{false};  // udp_fd_ opened by announce(), no thread uses it
  std::unique_ptr<BeatAuth> auth_;  // null: plain datagrams
  uint32_t udp_peer_addr_ = 0;  // network order
  std::thread udp_tx_, udp_rx_;
  std::mutex auth_mu_;  // BeatAuth::open (its replay window) for whichever thread reads
  std::atomic<int64_t> last_tx_ns_{0};  // mono ns of the last beat sent (either thread)
  std::atomic<uint64_t> backup_beats_{0}, read_by_check_{0}, udp_oversize_{0}, hook_skipped_{0};
  std::atomic<int> tx_cpu_{-1}, rx_cpu_{-1};
  std::atomic<uint64_t> udp_sent_{0}, udp_heard_{0};
  std::atomic<uint64_t> udp_rejected_[static_cast<size_t>(BeatReject::COUNT)] = {};
  std::atomic<bool> realtime_ok_{false};
  mutable std::mutex err_mu_;
  std::string udp_error_;
  std::unique_ptr<PeerEvents> events_;
  /* Stamps b with the next sequence number and the time and sends it. holds_probe_mu: the
   * caller is the prober, under probe_mu_ (for drain_icmp_errors). */
  bool send_beat(v1::Beat &b, bool holds_probe_mu = false);
  // Probes: the one outstanding (0: none) and its answer.
  std::mutex probe_mu_;
  std::condition_variable probe_cv_;
  uint64_t probe_id_ = 0, probe_seq_ = 0;
  bool probe_answered_ = false, probe_refused_ = false;
  // The first sequence number a refusal answering the probe may quote; 0: no probe running
  // (read without probe_mu_ first, so a refusal with no probe running takes no lock).
  std::atomic<uint64_t> refusal_from_seq_{0};
  std::atomic<uint64_t> probes_refused_{0}, refusals_read_{0};
  v1::Beat probe_answer_;
  std::mutex prober_mu_;  // one probe at a time; only probers take it
  v1::Beat probe_ask_, probe_out_;  // prober_mu_
  /* The messages a thread that reads datagrams parses into and answers from, one pair per
   * thread, warm from the start (see warm_beat in monitor.cc). */
  struct Scratch {
    Scratch();
    v1::Beat beat, answer;
    v1::Beat unpublished_beat;  // keep_unpublished
    bool unpublished = false;
    uint64_t published_then = 0;
  };
  static Scratch &datagram_scratch();
  std::atomic<uint64_t> probes_answered_{0};
  /* on_peer_beat runs on a thread of its own at normal priority, with the newest beat: the
   * real-time receiver never waits for the host's hook (a hook preempted on a busy machine
   * would otherwise stop the reception of beats and look like a silent peer). */
  void hook_loop();
  std::thread hook_thread_;
  std::mutex hook_mu_;
  std::condition_variable hook_cv_;
  bool hook_pending_ = false, hook_stop_ = false;
  v1::Beat hook_beat_;
};

}  // namespace ftpair::fo
