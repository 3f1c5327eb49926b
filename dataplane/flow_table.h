/* The flow table: a preallocated record array with its own key index (flow_index.h) and
 * the NAT's derived indexes (probe_table.h), with per-epoch dirty
 * tracking and an incremental, copy-before-write capture for checkpoints.
 *
 * Threading: one writer, the worker that owns the table. The control plane may call
 * flip_epoch() only while that worker is parked (interface agent quiesced), and reads a
 * capture only after capture_done() says it is complete. A standby's applier writes
 * through apply() while the worker leaves the table alone (it does not own the VIPs).
 * The counts and gauges (size, capacity, stats, ports in use, mappings, embryonic flows,
 * epoch, dirty count) may be read from any thread at any time: single-writer relaxed
 * atomics (common/single_writer.h), plain movs on the writer's side. The records, the
 * indexes and the capture are read by other threads only as described above. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <atomic>
#include <cstring>
#include <netinet/in.h>

#include "common/single_writer.h"
#include "dataplane/flow_index.h"
#include "dataplane/port_pool.h"
#include "dataplane/probe_table.h"

namespace ftpair::dp {

enum class TcpState : uint8_t {
  NONE = 0,
  SYN_SENT = 1,     // SYN seen from the initiator
  SYN_RECV = 2,     // SYN+ACK seen from the responder
  ESTABLISHED = 3,  // handshake completed
  FIN_WAIT = 4,     // one side sent FIN
  TIME_WAIT = 5,    // both sides sent FIN
  CLOSED = 6,       // RST seen
};
const char *tcp_state_name(TcpState s);

// Flow flags (FlowState::flags).
inline constexpr uint8_t kFlowInUse = 0x01;
inline constexpr uint8_t kFlowPortForward = 0x02;  // created by a static port-forward rule
inline constexpr uint8_t kFlowFinFromInside = 0x04;
inline constexpr uint8_t kFlowFinFromOutside = 0x08;
inline constexpr uint8_t kFlowReplied = 0x10;      // the responder has sent (traffic both ways)
// Initiated from the WAN through an endpoint-independent or address-dependent filter (a
// session on a LAN host's existing mapping), or through a hairpin; the responder is inside.
inline constexpr uint8_t kFlowInbound = 0x20;
inline constexpr uint8_t kFlowKnownFlags = kFlowInUse | kFlowPortForward | kFlowFinFromInside |
                                           kFlowFinFromOutside | kFlowReplied | kFlowInbound;

// TCP window tracking (FlowState::tcp_*): side 0 is the initiator, side 1 the responder.
inline constexpr uint8_t kWscaleNone = 0xf;  // a nibble of tcp_wscale: no window-scale option

/* The replicated part of a flow. Addresses and ports are in network byte order.
 * A LAN host (in_ip:in_port) talks to a remote (ext_ip:ext_port) and appears on the WAN
 * as nat_ip:nat_port. ICMP echo uses the identifier as in_port/nat_port, ext_port 0.
 * TCP flows also carry what the RST and window checks need (RFC 5961 style), per side
 * (0 initiator, 1 responder): the highest sequence number sent plus one (host order), and
 * the log2 of the largest scaled window advertised (0 = side not seen yet). */
struct FlowState {
  uint32_t in_ip;
  uint32_t ext_ip;
  uint32_t nat_ip;
  uint16_t in_port;
  uint16_t ext_port;
  uint16_t nat_port;
  uint8_t proto;
  uint8_t tcp_state;  // TcpState for TCP, 0 otherwise
  uint8_t flags;
  uint8_t tcp_wscale;     // low nibble: initiator's window shift, high: responder's
  uint8_t tcp_win_log[2];
  uint32_t tcp_end[2];
};
static_assert(sizeof(FlowState) == 32);
// FlowTable::key_of_record reads the keys out of the record by these offsets.
static_assert(offsetof(FlowState, ext_ip) == 4 && offsetof(FlowState, nat_ip) == 8 &&
              offsetof(FlowState, in_port) == 12 && offsetof(FlowState, ext_port) == 14 &&
              offsetof(FlowState, nat_port) == 16);
bool operator==(const FlowState &a, const FlowState &b);

/* A flow's share of the table's fingerprint: a 32-bit hash of its replicated state, the same
 * on every node and release (fixed constants, never the flow index's secret). The
 * fingerprint of a set of flows is the 64-bit sum of their shares, so it does not depend on
 * slots, shards or order: an active and a standby with other layouts compare it directly. */
uint32_t flow_fingerprint(const FlowState &s);

/* A flow that has not shown both sides yet: a TCP handshake not completed, or UDP and ICMP
 * without a reply. Under pressure these go first (RFC 6888 REQ-5 style). */
inline bool flow_embryonic(const FlowState &s) {
  if (s.proto == IPPROTO_TCP) return s.tcp_state == 1 || s.tcp_state == 2;  // SYN_SENT, SYN_RECV
  return !(s.flags & kFlowReplied);
}

/* A free slot's last_seen_tsc: the largest signed value, so that the expiry's first test,
 * "seen within the shortest timeout" (last_seen >= now - min_timeout, signed), passes over
 * it as over a fresh flow. Only a shortcut: the expiry still tests kFlowInUse before it
 * removes anything. */
inline constexpr uint64_t kFreeSlotSeen = uint64_t(INT64_MAX);

struct alignas(64) FlowRecord {
  FlowState st;
  uint64_t dirty_epoch;    // epoch of the last change
  uint64_t snap_epoch;     // epoch whose capture already holds this record
  uint64_t last_seen_tsc;  // not replicated: a standby refreshes on promotion; kFreeSlotSeen when free
  /* Free slot: the doubly linked free list, so a standby can claim any slot. Slot in use
   * and embryonic: the oldest-first list of embryonic flows. */
  uint32_t next;
  uint32_t prev;
};
static_assert(sizeof(FlowRecord) == 64);

/* A NAT mapping (RFC 4787 "mapping", the BIB of RFC 8158): one external address and port
 * per inside (address, port, protocol) while any flow uses it. Derived from the flows, so
 * a standby that applies the same flows holds the same mappings. */
struct Mapping {
  uint32_t in_ip;
  uint32_t nat_ip;
  uint16_t in_port;
  uint16_t nat_port;
  uint8_t proto;
  /* Inside the table only: 1 for the entry of a port-forwarded outside endpoint (no inside
   * endpoint; never a mapping to the outside world). */
  uint8_t forward;
  uint8_t reserved[2];
  uint32_t flows;  // flows that use it; the mapping goes with the last one
};
static_assert(sizeof(Mapping) == 20);

// Hash key. dir 0: inside view (src=in, dst=ext); dir 1: outside view (src=ext, dst=nat).
struct FlowKey {
  uint32_t src_ip;
  uint32_t dst_ip;
  uint16_t src_port;
  uint16_t dst_port;
  uint8_t proto;
  uint8_t dir;
  uint16_t zero;
};
static_assert(sizeof(FlowKey) == 16);
inline bool operator==(const FlowKey &a, const FlowKey &b) {
  return a.src_ip == b.src_ip && a.dst_ip == b.dst_ip && a.src_port == b.src_port &&
         a.dst_port == b.dst_port && a.proto == b.proto && a.dir == b.dir;
}

inline FlowKey inside_key(const FlowState &s) {
  return FlowKey{s.in_ip, s.ext_ip, s.in_port, s.ext_port, s.proto, 0, 0};
}
inline FlowKey outside_key(const FlowState &s) {
  return FlowKey{s.ext_ip, s.nat_ip, s.ext_port, s.nat_port, s.proto, 1, 0};
}

// One captured slot: its state at the epoch cut, or "free" (a deletion).
struct CapturedSlot {
  uint32_t slot;
  uint8_t in_use;
  uint8_t shard;  // the capturing table's shard (FlowTable::set_shard): its worker
  uint8_t reserved[2];
  FlowState st;
  uint64_t last_seen_tsc;
};

enum class CaptureKind : uint8_t { DIRTY, FULL, FULL_AND_DELETIONS };

struct FlowTableConfig {
  uint32_t capacity = 65536;  // flows
  int socket_id = 0;
  std::string name = "ftpair_flows";
};

// Which mapping events a table change caused (for session logging), see drain_events().
struct MappingEvent {
  Mapping m;
  bool created;  // false: deleted
};

// A copy of the table's statistics (stats()).
struct FlowTableStats {
  uint64_t inserts = 0;
  uint64_t removes = 0;
  uint64_t insert_full = 0;      // refused: no free record or hash space
  uint64_t capture_cow = 0;      // records copied by copy-before-write
};

/* Several workers' tables under one limit: flows.capacity is the node's, while each
 * worker's table has room for all of it (a LAN host's flows live on one worker, and a
 * standby files the active's flows by its own hosts' workers, so any one table may have to
 * take most of them). Each table counts its flows in; an insert past the limit is refused as
 * the table being full. */
struct alignas(64) FlowBudget {
  explicit FlowBudget(uint64_t limit) : limit(limit) {}
  const uint64_t limit;
  std::atomic<int64_t> used{0};
};

class FlowTable {
 public:
  // Returns nullptr and sets *err when the hash or record array cannot be allocated.
  static std::unique_ptr<FlowTable> create(const FlowTableConfig &cfg, std::string *err);
  ~FlowTable();
  FlowTable(const FlowTable &) = delete;
  FlowTable &operator=(const FlowTable &) = delete;

  uint32_t capacity() const { return capacity_; }
  uint32_t size() const { return size_.get(); }  // any thread
  /* Shares a node-wide limit with the other workers' tables (before any insert). Then
   * occupancy() and limit() are the node's; without one, the table's own size and capacity. */
  void share_budget(std::shared_ptr<FlowBudget> b) { budget_ = std::move(b); }
  uint64_t occupancy() const { return budget_ ? uint64_t(budget_->used.load(std::memory_order_relaxed)) : size(); }
  uint64_t limit() const { return budget_ ? budget_->limit : capacity_; }

  // Slot of the flow with this key, or -ENOENT.
  int lookup(const FlowKey &key) const;
  static constexpr unsigned kLookupBulkMax = 64;
  // Bulk lookup of up to kLookupBulkMax keys; slots[i] = slot or -1.
  void lookup_bulk(const FlowKey *const *keys, unsigned n, int32_t *slots) const;
  /* The same in two halves, for a caller that verifies each key when it gets to its packet
   * (lookup_bulk; the NF's last stage, through candidates()): lookup_candidates() takes each
   * key's first signature match in its bucket (hash_prefetch() brought the bucket in) and
   * prefetches that record; resolve() verifies the candidate, and searches in full only when
   * it is not the key. */
  void lookup_candidates(const uint32_t *h, unsigned n, uint32_t *cand) const {
    candidates(n, [h](unsigned i) { return h[i]; }, [cand](unsigned i, uint32_t c) { cand[i] = c; });
  }
  // lookup_candidates() over the caller's own layout: hash_of(i) is key i's hash, and
  // set_cand(i, c) takes its candidate (inline: no call, no arrays in between).
  template <typename HashOf, typename SetCand>
  void candidates(unsigned n, HashOf &&hash_of, SetCand &&set_cand) const {
    const FlowRecord *const rec = records_;
    for (unsigned i = 0; i < n; i++) {
      const uint32_t h = hash_of(i);
      const FlowIndex::Bucket &b = *index_.bucket_of(h);
      const unsigned m = FlowIndex::match(b, h);
      const uint32_t c = m ? b.val[static_cast<unsigned>(__builtin_ctz(m))] : FlowIndex::kEmpty;
      set_cand(i, c);
      // A match's record. An empty entry can match (a hash equal to its signature): its
      // "record" lies past the table (an address computed as an integer: no pointer past the
      // array is formed), and a prefetch never faults.
      if (m)
        __builtin_prefetch(reinterpret_cast<const void *>(reinterpret_cast<uintptr_t>(rec) +
                                                          uintptr_t(c >> 1) * sizeof(FlowRecord)));
    }
  }
  /* True when key is record r's key of direction d (0 or 1, as a value's low bit). The keys
   * are slices of the record: the inside key's addresses are its bytes 0-7 and ports 12-15,
   * the outside key's 4-11 and 14-17 (see FlowState), so two loads and two compares verify
   * either. With d a constant the offsets are too (udp_key_of_record, below, is the NF's
   * call-free loop's form). */
  static bool key_of_record(const FlowRecord &r, unsigned d, const FlowKey &key) {
    uint64_t ips, k[2];
    uint32_t ports;
    key_slices(r, d, ips, ports);
    std::memcpy(k, &key, 16);
    const uint64_t rest = ports | uint64_t(r.st.proto | d << 8) << 32;
    return ((ips ^ k[0]) | (rest ^ k[1])) == 0;
  }
  /* key_of_record() for a key known to be UDP's and of direction d (the NF's fast loop):
   * the addresses and the ports compared, and the record's protocol against UDP's. */
  static bool udp_key_of_record(const FlowRecord &r, unsigned d, const FlowKey &key) {
    uint64_t ips, kips;
    uint32_t ports, kports;
    key_slices(r, d, ips, ports);
    std::memcpy(&kips, &key, 8);
    std::memcpy(&kports, reinterpret_cast<const uint8_t *>(&key) + 8, 4);
    return ((ips ^ kips) | (ports ^ kports)) == 0 && r.st.proto == IPPROTO_UDP;
  }
  // Direction d's key slices of record r: its addresses (8 bytes) and ports (4), as the key
  // has them.
  static void key_slices(const FlowRecord &r, unsigned d, uint64_t &ips, uint32_t &ports) {
    const auto *b = reinterpret_cast<const uint8_t *>(&r.st);
    std::memcpy(&ips, b + 4 * d, 8);
    std::memcpy(&ports, b + 12 + 2 * d, 4);
  }
  // True when the candidate is key's own entry: resolve()'s common case, without its search.
  bool is_hit(uint32_t cand, const FlowKey &key) const { return cand != FlowIndex::kEmpty && key_is(cand, key); }
  int32_t resolve(uint32_t cand, const FlowKey &key, uint32_t h) const {
    if (__builtin_expect(is_hit(cand, key), 1)) return static_cast<int32_t>(cand >> 1);
    return resolve_miss(cand, key, h);
  }
  // The same for a key given as its two 8-byte halves.
  uint32_t hash_prefetch(uint64_t lo, uint64_t hi) const {
    const uint32_t h = index_.hash(lo, hi);
    __builtin_prefetch(index_.bucket_of(h));
    return h;
  }
  uint32_t hash_prefetch(const FlowKey &key) const {
    uint64_t lo, hi;
    std::memcpy(&lo, &key, 8);
    std::memcpy(&hi, reinterpret_cast<const uint8_t *>(&key) + 8, 8);
    return hash_prefetch(lo, hi);
  }

  // Adds a flow (both keys). Returns the slot, -ENOSPC when full, -EEXIST when a key is
  // already present. The new record is dirty in the current epoch.
  int insert(const FlowState &st, uint64_t now_tsc);
  // Removes the flow in slot; the slot is dirty (a deletion) in the current epoch.
  void remove(uint32_t slot);

  FlowRecord &record(uint32_t slot) { return records_[slot]; }
  const FlowRecord &record(uint32_t slot) const { return records_[slot]; }

  // Must be called before changing the replicated state of an in-use record.
  inline void touch(uint32_t slot);

  // NAT endpoints (outside address, port) in use by at least one flow, for a protocol
  // (IPPROTO_TCP/UDP/ICMP), summed over every outside address. Any thread.
  uint32_t ports_in_use(uint8_t proto) const;

  // --- indexes derived from the flows (kept on a standby too) ---
  // The mapping of an inside endpoint, or nullptr (EIM, RFC 4787 REQ-1).
  const Mapping *mapping_inside(uint32_t in_ip, uint16_t in_port, uint8_t proto) const;
  // The mapping that owns an outside endpoint, or nullptr.
  const Mapping *mapping_outside(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const;
  // Flows on an outside endpoint (mapped or port-forwarded).
  uint32_t endpoint_flows(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const;
  // Flows of a mapping toward one remote address (address-dependent filtering).
  uint32_t flows_toward(uint32_t ext_ip, uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const;
  // Flows a LAN host holds through mappings (port-forwarded flows do not count).
  uint32_t host_flows(uint32_t in_ip) const;
  uint32_t mappings() const { return n_mappings_.get(); }  // any thread
  /* The outside addresses NAT ports are allocated on (network order; the NF sets them):
   * the table keeps a bitmap of used ports per address and protocol for them. */
  void set_nat_pool(const std::vector<uint32_t> &addrs);
  /* Several workers' tables share one pool (port_pool.h): call before set_nat_pool, which
   * keeps a shared pool whose addresses match. */
  void share_port_pool(std::shared_ptr<PortPool> pool);
  // The used ports per pool address and protocol (nullptr before set_nat_pool).
  PortPool *port_pool() const { return ports_.get(); }
  /* Slot of the oldest embryonic flow, or -1. (A flow whose state was written directly
   * rather than through set_state is dropped from the list here when it no longer is.) */
  int32_t oldest_embryonic();
  uint32_t embryonic() const { return n_embryonic_.get(); }  // any thread
  /* Mapping creations and deletions since the last call, oldest first (at most the
   * buffer's size; the rest are counted in mapping_events_lost()). Owner thread only. */
  bool take_mapping_event(MappingEvent *out);
  void set_mapping_events(bool on) { map_events_on_.store(on, std::memory_order_relaxed); }
  uint64_t mapping_events_lost() const { return map_events_lost_.get(); }  // any thread

  /* Changes the TCP state and flags of an in-use flow (touching it first, so a pending
   * capture keeps the old state) and keeps the embryonic list in step. */
  void set_state(uint32_t slot, uint8_t tcp_state, uint8_t flags);
  // Any thread: each count is exact, the set is not one instant's.
  FlowTableStats stats() const {
    return FlowTableStats{stats_.inserts.get(), stats_.removes.get(), stats_.insert_full.get(), stats_.capture_cow.get()};
  }

  // --- epochs and capture ---
  // Readable from any thread (status, metrics): atomics, written by the table's one writer.
  uint64_t epoch() const { return epoch_.load(std::memory_order_relaxed); }
  // Dirty slots in the current (open) epoch.
  uint32_t dirty_count() const { return dirty_open_.load(std::memory_order_relaxed); }
  /* Closes the current epoch E and opens E+1. Only while the owning worker is parked.
   * With capture, the worker then copies E's dirty slots (or, FULL, every in-use slot;
   * FULL_AND_DELETIONS, every in-use slot and the slots freed in E)
   * into the capture buffer, incrementally and copy-before-write.
   * Returns E, or -EBUSY while the previous capture has not been released. */
  int64_t flip_epoch(bool capture, CaptureKind kind = CaptureKind::DIRTY);
  // Worker side: copy up to budget pending slots. Returns the slots still pending.
  uint32_t capture_step(uint32_t budget);
  bool capture_pending() const { return capture_active_; }
  // Control side: the epoch whose capture is complete and readable, or 0.
  uint64_t capture_done() const { return capture_done_.load(std::memory_order_acquire); }
  const std::vector<CapturedSlot> &captured() const { return capture_buf_; }
  CaptureKind capture_kind() const { return capture_kind_; }
  /* Control side, once capture_done(): the fingerprint of the table at the captured cut (the
   * sum of its in-use flows' flow_fingerprint). Kept in O(1) per captured slot: each slot's
   * share at the last cut is remembered. *valid is false after a flip without capture lost
   * an epoch's changes, until a full capture has walked every slot again. */
  uint64_t cut_fingerprint(bool *valid) const {
    *valid = cut_fp_valid_;
    return cut_fp_;
  }
  /* The fingerprint of what apply(), place() and clear() made of the table: a standby's
   * copy, kept in O(1) per applied record with each slot's share (the table mutex's
   * holder). Meaningless on an active, whose worker writes records directly. */
  uint64_t applied_fingerprint() const { return applied_fp_; }
  /* Control side, between captures (none held): makes the capture buffer's room for n slots
   * ready, its memory touched, so that a large capture (a full sync) does not take its page
   * faults on the worker while it copies. flip_epoch reserves what it needs anyway. */
  void prepare_capture(size_t n);
  // Control side: hands the capture buffer back; required before the next flip.
  void capture_release();
  // A capture is taken and not yet released (flip_epoch would refuse): control side.
  bool capture_held() const { return capture_held_; }
  /* The shard this table is: its worker's index, stamped on every captured slot so that the
   * records of several workers' tables can travel in one stream. 0 by default. */
  void set_shard(uint8_t shard) { shard_ = shard; }

  // --- standby side ---
  // Sets slot to st (in use, last seen at now_tsc) or frees it (st == nullptr). Returns 0, -EINVAL for a slot out
  // of range or a state without kFlowInUse, -EEXIST when a key belongs to another slot.
  int apply(uint32_t slot, const FlowState *st, uint64_t now_tsc) {
    if (slot >= capacity_) return apply_state(slot, st, now_tsc);
    const int rc = apply_state(slot, st, now_tsc);
    // Records written here are not in the shares at the cut: an active built on them (a
    // promoted standby, a restored snapshot) sends no fingerprint before a full capture.
    cut_fp_valid_ = false;
    const uint32_t after = share(slot);
    applied_fp_ += uint64_t(after) - applied_share_[slot];
    applied_share_[slot] = after;
    return rc;
  }
  /* A standby's scrub: rereads n slots from slot `from` (wrapping) and compares each with
   * its share as applied. Returns the first slot whose record changed in memory since it
   * was applied (a bit flip, a write behind the applier), or -1. The table mutex's holder. */
  int64_t scrub(uint32_t from, uint32_t n) const {
    for (uint32_t k = 0; k < n && k < capacity_; k++) {
      const uint32_t slot = (from + k) % capacity_;
      if (share(slot) != applied_share_[slot]) return slot;
    }
    return -1;
  }
  /* A hint ahead of apply(slot, &st) or place(st, slot): prefetches the lines that applying
   * st there will touch first (the slot's record and share, the buckets of the flow's two
   * keys, its endpoint's and its host's index entries), so that the cache misses of a batch
   * of records overlap instead of following one another. Changes nothing. */
  void prefetch_apply(const FlowState &st, uint32_t slot) const;
  // Frees every slot (before a full sync is applied).
  void clear();
  /* A standby's insert of a replicated flow that need not keep its slot: at prefer when that
   * slot is free (the active's slot, so equal layouts stay slot-stable), else at the head of
   * the free list. Returns the slot, -ENOSPC when the table is full, or apply()'s error. */
  int place(const FlowState &st, uint32_t prefer, uint64_t now_tsc);
  // Sets every in-use record's last-seen time (a standby taking over).
  void refresh_all(uint64_t now_tsc);

  // Iteration helpers for dumps done while the worker is parked or not running.
  template <typename F> void for_each(F &&f) const {
    for (uint32_t i = 0; i < capacity_; i++)
      if (records_[i].st.flags & kFlowInUse) f(i, records_[i]);
  }
  // The same, stopping once f returns false (a bounded dump need not walk the whole table).
  template <typename F> void for_each_while(F &&f) const {
    uint32_t seen = 0;
    const uint32_t n = size_.get();
    for (uint32_t i = 0; i < capacity_ && seen < n; i++)
      if (records_[i].st.flags & kFlowInUse) {
        seen++;
        if (!f(i, records_[i])) return;
      }
  }

 private:
  FlowTable() = default;
  void copy_to_capture(uint32_t slot);
  int apply_state(uint32_t slot, const FlowState *st, uint64_t now_tsc);
  // A slot's share of the fingerprint as it is now: 0 when free.
  uint32_t share(uint32_t slot) const {
    return (records_[slot].st.flags & kFlowInUse) ? flow_fingerprint(records_[slot].st) : 0;
  }
  int add_keys(uint32_t slot);
  void del_keys(uint32_t slot);
  int index_add(const FlowState &st);
  void index_del(const FlowState &st);
  void map_event(const Mapping &m, bool created);
  void free_slot(uint32_t slot);
  void unlink_free(uint32_t slot);
  void emb_push(uint32_t slot);
  void emb_unlink(uint32_t slot);
  // The entry of a mapping by its inside endpoint, of an outside endpoint, or -1.
  int32_t map_by_inside(uint32_t in_ip, uint16_t in_port, uint8_t proto) const;
  int32_t map_by_outside(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const;
  void count_toward(const FlowState &st, int delta);
  void count_host(uint32_t in_ip, int delta);

  // resolve() when the candidate is not the key: a miss, or a search of the bucket's chain.
  int32_t resolve_miss(uint32_t cand, const FlowKey &key, uint32_t h) const;
  // True when the key of value v (slot << 1 | direction) is key.
  bool key_is(uint32_t v, const FlowKey &key) const { return key_of_record(records_[v >> 1], v & 1, key); }
  FlowIndex index_;
  FlowRecord *records_ = nullptr;
  uint32_t capacity_ = 0;
  SingleWriter<uint32_t> size_{0};
  uint32_t free_head_ = 0;
  std::atomic<uint64_t> epoch_{1};
  std::atomic<uint32_t> dirty_open_{0};  // dirty_[epoch_ & 1].size(), for other threads
  std::vector<uint32_t> dirty_[2];
  SingleWriter<uint32_t> ports_used_[3];
  /* The derived indexes (see index_add in flow_table.cc). maps_ holds an entry per outside
   * endpoint in use: a mapping, or a port-forwarded endpoint (Mapping::forward). by_map_
   * finds an entry by its inside endpoint (mappings only) and by its outside endpoint: the
   * key's hash and (entry << 1 | outside) + 1, verified against maps_. toward_ counts the
   * flows of a mapping (by its outside endpoint) toward a remote address (address-dependent filtering), host_ the
   * mapped flows of a LAN host. Each is sized for the most entries it can need (one per flow
   * slot; by_map_ two), so none ever refuses an insert. Keys hash with index_'s secret. */
  struct MapEntry {
    uint32_t sig;
    uint32_t val;
    bool empty() const { return val == 0; }
    uint32_t hash(const FlowIndex &) const { return sig; }
  };
  // Keyed by the remote address and the mapping's outside endpoint (which names the
  // mapping), so that its place is known from a flow's state alone (prefetch_apply).
  struct TowardEntry {
    uint32_t ext_ip;
    uint32_t nat_ip;
    uint16_t nat_port;
    uint8_t proto;
    uint8_t reserved;
    uint32_t flows;
    bool empty() const { return flows == 0; }
    bool is(uint32_t e, uint32_t n, uint16_t p, uint8_t pr) const {
      return ext_ip == e && nat_ip == n && nat_port == p && proto == pr;
    }
    uint32_t hash(const FlowIndex &ix) const;
  };
  struct HostEntry {
    uint32_t in_ip;
    uint32_t flows;
    bool empty() const { return flows == 0; }
    uint32_t hash(const FlowIndex &ix) const;
  };
  ProbeTable<MapEntry, FlowIndex> by_map_;
  ProbeTable<TowardEntry, FlowIndex> toward_;
  ProbeTable<HostEntry, FlowIndex> host_;
  std::vector<Mapping> maps_;
  std::vector<uint32_t> maps_free_;
  SingleWriter<uint32_t> n_mappings_{0};
  std::shared_ptr<PortPool> ports_;
  void mark_port(const FlowState &st, bool used);
  uint32_t emb_head_ = UINT32_MAX, emb_tail_ = UINT32_MAX;
  SingleWriter<uint32_t> n_embryonic_{0};
  std::vector<uint8_t> emb_member_;  // per slot: on the embryonic list
  std::atomic<bool> map_events_on_{false};
  std::vector<MappingEvent> map_events_;
  uint32_t map_events_head_ = 0, map_events_n_ = 0;
  SingleWriter<uint64_t> map_events_lost_{0};

  // capture of epoch capture_epoch_
  bool capture_active_ = false;
  bool capture_held_ = false;  // buffer not yet released by the control side
  uint8_t shard_ = 0;
  std::shared_ptr<FlowBudget> budget_;
  CaptureKind capture_kind_ = CaptureKind::DIRTY;
  uint64_t capture_epoch_ = 0;
  uint32_t capture_cursor_ = 0;
  std::vector<CapturedSlot> capture_buf_;
  // The fingerprint at the last cut, and each slot's share in it (copy_to_capture).
  std::unique_ptr<uint32_t[]> cut_share_;
  uint64_t cut_fp_ = 0;
  bool cut_fp_valid_ = true;
  uint64_t applied_fp_ = 0;
  std::unique_ptr<uint32_t[]> applied_share_;  // each slot's share as last applied
  std::atomic<uint64_t> capture_done_{0};
  struct {
    SingleWriter<uint64_t> inserts, removes, insert_full, capture_cow;
  } stats_;
};

inline void FlowTable::touch(uint32_t slot) {
  FlowRecord &r = records_[slot];
  if (capture_active_ && r.snap_epoch != capture_epoch_ &&
      (capture_kind_ != CaptureKind::DIRTY || r.dirty_epoch == capture_epoch_)) {
    copy_to_capture(slot);
    stats_.capture_cow++;
  }
  const uint64_t e = epoch_.load(std::memory_order_relaxed);
  if (r.dirty_epoch != e) {
    r.dirty_epoch = e;
    dirty_[e & 1].push_back(slot);
    dirty_open_.store(dirty_open_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
}

}  // namespace ftpair::dp
