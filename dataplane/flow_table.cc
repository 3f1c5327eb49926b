#include "dataplane/flow_table.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <netinet/in.h>

#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_prefetch.h>
#include <rte_random.h>

namespace ftpair::dp {

namespace {
constexpr uint32_t kNoSlot = UINT32_MAX;

int proto_index(uint8_t proto) {
  switch (proto) {
    case IPPROTO_TCP: return 0;
    case IPPROTO_UDP: return 1;
    case IPPROTO_ICMP: return 2;
    default: return -1;
  }
}

}  // namespace

const char *tcp_state_name(TcpState s) {
  switch (s) {
    case TcpState::NONE: return "none";
    case TcpState::SYN_SENT: return "syn_sent";
    case TcpState::SYN_RECV: return "syn_recv";
    case TcpState::ESTABLISHED: return "established";
    case TcpState::FIN_WAIT: return "fin_wait";
    case TcpState::TIME_WAIT: return "time_wait";
    case TcpState::CLOSED: return "closed";
  }
  return "unknown";
}

bool operator==(const FlowState &a, const FlowState &b) {
  return a.in_ip == b.in_ip && a.ext_ip == b.ext_ip && a.nat_ip == b.nat_ip &&
         a.in_port == b.in_port && a.ext_port == b.ext_port && a.nat_port == b.nat_port &&
         a.proto == b.proto && a.tcp_state == b.tcp_state && a.flags == b.flags &&
         a.tcp_wscale == b.tcp_wscale && a.tcp_win_log[0] == b.tcp_win_log[0] &&
         a.tcp_win_log[1] == b.tcp_win_log[1] && a.tcp_end[0] == b.tcp_end[0] &&
         a.tcp_end[1] == b.tcp_end[1];
}

uint32_t flow_fingerprint(const FlowState &s) {
  static_assert(sizeof(FlowState) == 32);
  uint64_t w[4];
  std::memcpy(w, &s, sizeof w);
  uint64_t h = 0x243f6a8885a308d3ull;
  for (uint64_t x : w) {
    h ^= x;
    h *= 0x9e3779b97f4a7c15ull;
    h ^= h >> 31;
  }
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  // Never 0, so that a flow in use always counts.
  const uint32_t v = static_cast<uint32_t>(h >> 32);
  return v ? v : 1;
}

std::unique_ptr<FlowTable> FlowTable::create(const FlowTableConfig &cfg, std::string *err) {
  if (cfg.capacity < 16 || cfg.capacity > (1u << 26)) {
    *err = "flows.capacity must be between 16 and 67108864";
    return nullptr;
  }
  std::unique_ptr<FlowTable> t(new FlowTable());
  t->capacity_ = cfg.capacity;
  if (!t->index_.init(cfg.capacity * 2, rte_rand(), rte_rand())) {
    *err = "cannot allocate the flow key index for " + std::to_string(cfg.capacity) + " flows";
    return nullptr;
  }
  /* The derived indexes, each sized for the most entries it can need: an outside endpoint
   * per flow at most (maps_), so an inside and an outside key per flow slot (by_map_); one
   * remote address of a mapping per mapped flow (toward_); one LAN host per mapped flow
   * (host_). */
  if (!t->by_map_.init(cfg.capacity * 2) || !t->toward_.init(cfg.capacity) || !t->host_.init(cfg.capacity)) {
    *err = "cannot allocate the NAT's indexes for " + std::to_string(cfg.capacity) + " flows";
    return nullptr;
  }
  t->cut_share_.reset(new (std::nothrow) uint32_t[cfg.capacity]());
  t->applied_share_.reset(new (std::nothrow) uint32_t[cfg.capacity]());
  if (!t->cut_share_ || !t->applied_share_) {
    *err = "cannot allocate the fingerprint shares for " + std::to_string(cfg.capacity) + " flows";
    return nullptr;
  }
  t->maps_.resize(cfg.capacity);
  t->maps_free_.reserve(cfg.capacity);
  for (uint32_t i = cfg.capacity; i-- > 0;) t->maps_free_.push_back(i);
  t->map_events_.resize(4096);
  t->emb_member_.assign(cfg.capacity, 0);
  t->records_ = static_cast<FlowRecord *>(
      rte_zmalloc_socket("ftpair_flow_records", sizeof(FlowRecord) * size_t(cfg.capacity), 64,
                         cfg.socket_id));
  if (t->records_ == nullptr) {
    *err = "cannot allocate the flow record array (raise dpdk.memory_mb)";
    return nullptr;
  }
  for (uint32_t i = 0; i < cfg.capacity; i++) {
    t->records_[i].next = i + 1 < cfg.capacity ? i + 1 : kNoSlot;
    t->records_[i].prev = i == 0 ? kNoSlot : i - 1;
    t->records_[i].last_seen_tsc = kFreeSlotSeen;
  }
  t->free_head_ = 0;
  t->dirty_[0].reserve(cfg.capacity);
  t->dirty_[1].reserve(cfg.capacity);
  return t;
}

FlowTable::~FlowTable() {
  if (records_) rte_free(records_);
}

int FlowTable::lookup(const FlowKey &key) const {
  const uint32_t v = index_.find(index_.hash(&key), [&](uint32_t v) { return key_is(v, key); });
  return v == FlowIndex::kEmpty ? -ENOENT : static_cast<int>(v >> 1);
}

/* Three passes over the burst, each touching one line per key that the pass before
 * prefetched: hash and prefetch the bucket; match the signatures and prefetch the record
 * of the first candidate; verify the key against the record (a miss in a full bucket, or a
 * false match, walks the chain). */
void FlowTable::lookup_bulk(const FlowKey *const *keys, unsigned n, int32_t *slots) const {
  uint32_t h[kLookupBulkMax] = {};  // zeroed only to quiet -Wmaybe-uninitialized (n may be 0)
  for (unsigned i = 0; i < n; i++) h[i] = hash_prefetch(*keys[i]);
  uint32_t cand[kLookupBulkMax];
  lookup_candidates(h, n, cand);
  for (unsigned i = 0; i < n; i++) slots[i] = resolve(cand[i], *keys[i], h[i]);
}

int32_t FlowTable::resolve_miss(uint32_t cand, const FlowKey &key, uint32_t h) const {
  // No signature matched in a bucket that has room: no chain to follow, a miss.
  if (cand == FlowIndex::kEmpty && !FlowIndex::full(*index_.bucket_of(h))) return -1;
  const uint32_t v = index_.find(h, [&](uint32_t v) { return key_is(v, key); });
  return v == FlowIndex::kEmpty ? -1 : static_cast<int32_t>(v >> 1);
}

uint32_t FlowTable::ports_in_use(uint8_t proto) const {
  int pi = proto_index(proto);
  return pi < 0 ? 0 : ports_used_[pi].get();
}

// ---------------------------------------------------------------- derived indexes

namespace {
// The derived indexes' keys, hashed as FlowKeys with dir >= 2 (never a flow's key).
inline FlowKey map_in_key(uint32_t in_ip, uint16_t in_port, uint8_t proto) {
  return FlowKey{in_ip, 0, in_port, 0, proto, 2, 0};
}
inline FlowKey endpoint_key(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) {
  return FlowKey{0, nat_ip, 0, nat_port, proto, 3, 0};
}
inline FlowKey toward_key(uint32_t ext_ip, uint32_t nat_ip, uint16_t nat_port, uint8_t proto) {
  return FlowKey{ext_ip, nat_ip, 0, nat_port, proto, 4, 0};
}
inline FlowKey host_key(uint32_t in_ip) { return FlowKey{in_ip, 0, 0, 0, 0, 5, 0}; }
}  // namespace

uint32_t FlowTable::TowardEntry::hash(const FlowIndex &ix) const {
  const FlowKey k = toward_key(ext_ip, nat_ip, nat_port, proto);
  return ix.hash(&k);
}

uint32_t FlowTable::HostEntry::hash(const FlowIndex &ix) const {
  const FlowKey k = host_key(in_ip);
  return ix.hash(&k);
}

int32_t FlowTable::map_by_inside(uint32_t in_ip, uint16_t in_port, uint8_t proto) const {
  const FlowKey k = map_in_key(in_ip, in_port, proto);
  const MapEntry *e = by_map_.find(index_.hash(&k), [&](const MapEntry &e) {
    if ((e.val - 1) & 1) return false;
    const Mapping &m = maps_[(e.val - 1) >> 1];
    return m.in_ip == in_ip && m.in_port == in_port && m.proto == proto && !m.forward;
  });
  return e ? static_cast<int32_t>((e->val - 1) >> 1) : -1;
}

int32_t FlowTable::map_by_outside(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const {
  const FlowKey k = endpoint_key(nat_ip, nat_port, proto);
  const MapEntry *e = by_map_.find(index_.hash(&k), [&](const MapEntry &e) {
    if (!((e.val - 1) & 1)) return false;
    const Mapping &m = maps_[(e.val - 1) >> 1];
    return m.nat_ip == nat_ip && m.nat_port == nat_port && m.proto == proto;
  });
  return e ? static_cast<int32_t>((e->val - 1) >> 1) : -1;
}

void FlowTable::count_toward(const FlowState &st, int delta) {
  const FlowKey k = toward_key(st.ext_ip, st.nat_ip, st.nat_port, st.proto);
  const uint32_t h = index_.hash(&k);
  TowardEntry *e = toward_.find(h, [&](const TowardEntry &e) { return e.is(st.ext_ip, st.nat_ip, st.nat_port, st.proto); });
  if (delta > 0) {
    if (e == nullptr) *(e = toward_.claim(h)) = TowardEntry{st.ext_ip, st.nat_ip, st.nat_port, st.proto, 0, 0};
    e->flows++;
  } else if (e != nullptr && --e->flows == 0) {
    toward_.erase(e, index_);
  }
}

void FlowTable::count_host(uint32_t in_ip, int delta) {
  const FlowKey k = host_key(in_ip);
  const uint32_t h = index_.hash(&k);
  HostEntry *e = host_.find(h, [&](const HostEntry &e) { return e.in_ip == in_ip; });
  if (delta > 0) {
    if (e == nullptr) *(e = host_.claim(h)) = HostEntry{in_ip, 0};
    e->flows++;
  } else if (e != nullptr && --e->flows == 0) {
    host_.erase(e, index_);
  }
}

void FlowTable::share_port_pool(std::shared_ptr<PortPool> pool) { ports_ = std::move(pool); }

void FlowTable::set_nat_pool(const std::vector<uint32_t> &addrs) {
  // A pool shared by the workers' tables is kept when it has the same addresses: the
  // first table's call made it.
  if (!ports_ || ports_->addresses() != addrs) ports_ = std::make_shared<PortPool>(addrs);
  for (uint32_t i = 0; i < capacity_; i++) {
    const FlowState &st = records_[i].st;
    if (st.flags & kFlowInUse) mark_port(st, true);
  }
}

/* The pool's bit of st's outside endpoint (nothing when its address is not pooled), and
 * the bucket that holds its flows. */
void FlowTable::mark_port(const FlowState &st, bool used) {
  if (!ports_) return;
  const int a = ports_->index(st.nat_ip), pi = proto_index(st.proto);
  if (a < 0 || pi < 0) return;
  const uint16_t port = ntohs(st.nat_port);
  if (used) {
    ports_->claim(a, pi, port);
    ports_->set_owner(a, pi, port, host_bucket(st.in_ip));
  } else {
    ports_->release(a, pi, port);
  }
}

const Mapping *FlowTable::mapping_inside(uint32_t in_ip, uint16_t in_port, uint8_t proto) const {
  const int32_t i = map_by_inside(in_ip, in_port, proto);
  return i < 0 ? nullptr : &maps_[i];
}

const Mapping *FlowTable::mapping_outside(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const {
  const int32_t i = map_by_outside(nat_ip, nat_port, proto);
  return i < 0 || maps_[i].forward ? nullptr : &maps_[i];
}

uint32_t FlowTable::endpoint_flows(uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const {
  const int32_t i = map_by_outside(nat_ip, nat_port, proto);
  return i < 0 ? 0 : maps_[i].flows;
}

uint32_t FlowTable::flows_toward(uint32_t ext_ip, uint32_t nat_ip, uint16_t nat_port, uint8_t proto) const {
  // Keyed by the mapping's outside endpoint: one probe. (A forwarded endpoint has none.)
  const FlowKey k = toward_key(ext_ip, nat_ip, nat_port, proto);
  const TowardEntry *e = toward_.find(index_.hash(&k), [&](const TowardEntry &e) {
    return e.is(ext_ip, nat_ip, nat_port, proto);
  });
  return e ? e->flows : 0;
}

uint32_t FlowTable::host_flows(uint32_t in_ip) const {
  const FlowKey k = host_key(in_ip);
  const HostEntry *e = host_.find(index_.hash(&k), [&](const HostEntry &e) { return e.in_ip == in_ip; });
  return e ? e->flows : 0;
}

void FlowTable::map_event(const Mapping &m, bool created) {
  if (!map_events_on_.load(std::memory_order_relaxed)) return;
  const uint32_t cap = static_cast<uint32_t>(map_events_.size());
  if (map_events_n_ == cap) {
    map_events_lost_++;
    return;
  }
  map_events_[(map_events_head_ + map_events_n_) % cap] = MappingEvent{m, created};
  map_events_n_++;
}

bool FlowTable::take_mapping_event(MappingEvent *out) {
  if (map_events_n_ == 0) return false;
  *out = map_events_[map_events_head_];
  map_events_head_ = (map_events_head_ + 1) % static_cast<uint32_t>(map_events_.size());
  map_events_n_--;
  return true;
}

/* Adds a flow to the indexes. A port-forwarded flow holds its outside endpoint only (an
 * entry of maps_ marked forward, shared by the flows of that endpoint); every other flow
 * belongs to the mapping of its inside endpoint, which it creates when it is the first.
 * -EEXIST when the flow contradicts a mapping (another outside endpoint for the same inside
 * one, or an outside endpoint that belongs to someone else): nothing is changed. */
int FlowTable::index_add(const FlowState &st) {
  const int pi = proto_index(st.proto);
  if (pi < 0) return -EINVAL;
  const int32_t out = map_by_outside(st.nat_ip, st.nat_port, st.proto);
  int32_t idx;
  if (!(st.flags & kFlowPortForward)) {
    idx = map_by_inside(st.in_ip, st.in_port, st.proto);
    if (idx >= 0) {
      if (maps_[idx].nat_ip != st.nat_ip || maps_[idx].nat_port != st.nat_port) return -EEXIST;
    } else if (out >= 0) {
      return -EEXIST;  // the endpoint is someone else's
    }
  } else {
    if (out >= 0 && !maps_[out].forward) return -EEXIST;  // a forwarded endpoint that a mapping holds
    idx = out;
  }
  if (idx < 0) {
    // A new outside endpoint: a mapping, or a forwarded endpoint's entry. (There are never
    // more endpoints than flows, so the entries do not run out while a slot is free.)
    if (maps_free_.empty()) return -ENOSPC;
    idx = static_cast<int32_t>(maps_free_.back());
    maps_free_.pop_back();
    const bool fwd = st.flags & kFlowPortForward;
    Mapping &m = maps_[idx];
    m = Mapping{fwd ? 0 : st.in_ip, st.nat_ip, fwd ? uint16_t(0) : st.in_port, st.nat_port, st.proto, fwd, {0, 0}, 0};
    const FlowKey ok = endpoint_key(st.nat_ip, st.nat_port, st.proto);
    const uint32_t ho = index_.hash(&ok);
    by_map_.claim(ho)[0] = MapEntry{ho, (uint32_t(idx) << 1 | 1) + 1};
    if (!fwd) {
      const FlowKey ik = map_in_key(st.in_ip, st.in_port, st.proto);
      const uint32_t hi = index_.hash(&ik);
      by_map_.claim(hi)[0] = MapEntry{hi, (uint32_t(idx) << 1) + 1};
      n_mappings_++;
    }
    ports_used_[pi]++;
    mark_port(st, true);
  }
  Mapping &m = maps_[idx];
  m.flows++;
  if (!m.forward) {
    if (m.flows == 1) map_event(m, true);
    count_toward(st, +1);
    count_host(st.in_ip, +1);
  }
  return 0;
}

void FlowTable::index_del(const FlowState &st) {
  const int pi = proto_index(st.proto);
  if (pi < 0) return;
  const int32_t idx = map_by_outside(st.nat_ip, st.nat_port, st.proto);
  if (idx < 0) return;
  Mapping &m = maps_[idx];
  if (!m.forward) {
    count_toward(st, -1);
    count_host(st.in_ip, -1);
  }
  if (--m.flows > 0) return;
  // The endpoint's last flow: the mapping (or forwarded endpoint) goes.
  const auto drop = [&](const FlowKey &k, uint32_t val) {
    const uint32_t h = index_.hash(&k);
    MapEntry *e = by_map_.find(h, [&](const MapEntry &e) { return e.val == val; });
    if (e) by_map_.erase(e, index_);
  };
  drop(endpoint_key(m.nat_ip, m.nat_port, m.proto), (uint32_t(idx) << 1 | 1) + 1);
  if (!m.forward) {
    drop(map_in_key(m.in_ip, m.in_port, m.proto), (uint32_t(idx) << 1) + 1);
    map_event(m, false);
    n_mappings_--;
  }
  maps_free_.push_back(static_cast<uint32_t>(idx));
  ports_used_[pi]--;
  mark_port(st, false);
}

// ---------------------------------------------------------------- embryonic flows

void FlowTable::emb_push(uint32_t slot) {
  FlowRecord &r = records_[slot];
  r.next = kNoSlot;
  r.prev = emb_tail_;
  if (emb_tail_ != kNoSlot)
    records_[emb_tail_].next = slot;
  else
    emb_head_ = slot;
  emb_tail_ = slot;
  emb_member_[slot] = 1;
  n_embryonic_++;
}

void FlowTable::emb_unlink(uint32_t slot) {
  FlowRecord &r = records_[slot];
  if (r.prev != kNoSlot)
    records_[r.prev].next = r.next;
  else
    emb_head_ = r.next;
  if (r.next != kNoSlot)
    records_[r.next].prev = r.prev;
  else
    emb_tail_ = r.prev;
  r.next = r.prev = kNoSlot;
  emb_member_[slot] = 0;
  n_embryonic_--;
}

int32_t FlowTable::oldest_embryonic() {
  while (emb_head_ != kNoSlot && !flow_embryonic(records_[emb_head_].st)) emb_unlink(emb_head_);
  return emb_head_ == kNoSlot ? -1 : static_cast<int32_t>(emb_head_);
}

void FlowTable::set_state(uint32_t slot, uint8_t tcp_state, uint8_t flags) {
  FlowRecord &r = records_[slot];
  touch(slot);
  const bool was = emb_member_[slot];
  r.st.tcp_state = tcp_state;
  r.st.flags = flags;
  const bool now = flow_embryonic(r.st);
  if (was && !now)
    emb_unlink(slot);
  else if (!was && now)
    emb_push(slot);
}

int FlowTable::add_keys(uint32_t slot) {
  const FlowState &st = records_[slot].st;
  const FlowKey in = inside_key(st), out = outside_key(st);
  const uint32_t hin = index_.hash(&in), hout = index_.hash(&out);
  if (index_.find(hin, [&](uint32_t v) { return key_is(v, in); }) != FlowIndex::kEmpty ||
      index_.find(hout, [&](uint32_t v) { return key_is(v, out); }) != FlowIndex::kEmpty)
    return -EEXIST;
  int rc = index_.add(hin, slot << 1);
  if (rc < 0) return rc;
  rc = index_.add(hout, slot << 1 | 1);
  if (rc < 0) {
    index_.remove(hin, slot << 1);
    return rc;
  }
  return 0;
}

void FlowTable::del_keys(uint32_t slot) {
  const FlowState &st = records_[slot].st;
  const FlowKey in = inside_key(st), out = outside_key(st);
  index_.remove(index_.hash(&in), slot << 1);
  index_.remove(index_.hash(&out), slot << 1 | 1);
}

int FlowTable::insert(const FlowState &st, uint64_t now_tsc) {
  if (free_head_ == kNoSlot) {
    stats_.insert_full++;
    return -ENOSPC;
  }
  // The node's limit, shared with the other workers: taken before the slot, given back on a
  // refusal below or when the flow goes (free_slot).
  if (budget_ && budget_->used.fetch_add(1, std::memory_order_relaxed) >= int64_t(budget_->limit)) {
    budget_->used.fetch_sub(1, std::memory_order_relaxed);
    stats_.insert_full++;
    return -ENOSPC;
  }
  uint32_t slot = free_head_;
  FlowRecord &r = records_[slot];
  touch(slot);  // the capture may still need this slot's previous (free) state
  r.st = st;
  r.st.flags |= kFlowInUse;
  int rc = add_keys(slot);
  if (rc == 0) {
    rc = index_add(r.st);
    if (rc < 0) del_keys(slot);
  }
  if (rc < 0) {
    r.st = FlowState{};
    if (rc == -ENOSPC) stats_.insert_full++;
    if (budget_) budget_->used.fetch_sub(1, std::memory_order_relaxed);
    return rc;
  }
  unlink_free(slot);
  r.last_seen_tsc = now_tsc;
  if (flow_embryonic(r.st)) emb_push(slot);
  size_++;
  stats_.inserts++;
  return static_cast<int>(slot);
}

void FlowTable::free_slot(uint32_t slot) {
  FlowRecord &r = records_[slot];
  if (emb_member_[slot]) emb_unlink(slot);
  index_del(r.st);
  del_keys(slot);
  r.st = FlowState{};
  r.last_seen_tsc = kFreeSlotSeen;
  r.next = free_head_;
  r.prev = kNoSlot;
  if (free_head_ != kNoSlot) records_[free_head_].prev = slot;
  free_head_ = slot;
  size_--;
  if (budget_) budget_->used.fetch_sub(1, std::memory_order_relaxed);
}

void FlowTable::unlink_free(uint32_t slot) {
  FlowRecord &r = records_[slot];
  if (r.prev != kNoSlot)
    records_[r.prev].next = r.next;
  else
    free_head_ = r.next;
  if (r.next != kNoSlot) records_[r.next].prev = r.prev;
  r.next = r.prev = kNoSlot;
}

void FlowTable::remove(uint32_t slot) {
  if (slot >= capacity_ || !(records_[slot].st.flags & kFlowInUse)) return;
  touch(slot);
  free_slot(slot);
  stats_.removes++;
}

void FlowTable::copy_to_capture(uint32_t slot) {
  FlowRecord &r = records_[slot];
  r.snap_epoch = capture_epoch_;
  bool in_use = r.st.flags & kFlowInUse;
  // The slot's state at the cut replaces its share of the fingerprint (free: none).
  const uint32_t sh = share(slot);
  cut_fp_ += uint64_t(sh) - cut_share_[slot];
  cut_share_[slot] = sh;
  if (capture_kind_ == CaptureKind::FULL && !in_use) return;
  // FULL_AND_DELETIONS: also the slots freed in the captured epoch, so a stream already in
  // sync can take the capture as that epoch's changes while another one is fully synced.
  if (capture_kind_ == CaptureKind::FULL_AND_DELETIONS && !in_use && r.dirty_epoch != capture_epoch_) return;
  CapturedSlot c{};
  c.slot = slot;
  c.in_use = in_use;
  c.shard = shard_;
  c.st = r.st;
  c.last_seen_tsc = r.last_seen_tsc;
  capture_buf_.push_back(c);
}

int64_t FlowTable::flip_epoch(bool capture, CaptureKind kind) {
  if (capture_held_) return -EBUSY;
  const uint64_t closed = epoch_.load(std::memory_order_relaxed);
  epoch_.store(closed + 1, std::memory_order_relaxed);
  dirty_[(closed + 1) & 1].clear();  // the list of closed-1: captured and released, or unused
  dirty_open_.store(0, std::memory_order_relaxed);
  // A flip without capture loses the closed epoch's changes from the fingerprint too; a
  // full capture walks every slot and makes it whole again.
  if (!capture)
    cut_fp_valid_ = false;
  else if (kind != CaptureKind::DIRTY)
    cut_fp_valid_ = true;
  if (capture) {
    capture_buf_.clear();
    /* Room for every slot the capture can copy, taken here while the worker is parked so
     * that it never reallocates under the worker: the closed epoch's dirty slots, or the
     * flows in use (and, FULL_AND_DELETIONS, the slots freed in the epoch). The buffer is
     * held on demand, not for the whole capacity (capture_release). */
    const size_t dirty = dirty_[closed & 1].size();
    const size_t need = kind == CaptureKind::DIRTY ? dirty
                        : kind == CaptureKind::FULL ? size_.get()
                                                    : size_.get() + dirty;
    capture_buf_.reserve(need);
    capture_kind_ = kind;
    capture_epoch_ = closed;
    capture_cursor_ = 0;
    capture_active_ = true;
    capture_held_ = true;
  }
  return static_cast<int64_t>(closed);
}

uint32_t FlowTable::capture_step(uint32_t budget) {
  if (!capture_active_) return 0;
  uint32_t end;
  const uint32_t *list = nullptr;
  if (capture_kind_ == CaptureKind::DIRTY) {
    list = dirty_[capture_epoch_ & 1].data();
    end = static_cast<uint32_t>(dirty_[capture_epoch_ & 1].size());
  } else {
    end = capacity_;
  }
  uint32_t stop = capture_cursor_ + budget < end ? capture_cursor_ + budget : end;
  for (uint32_t i = capture_cursor_; i < stop; i++) {
    uint32_t slot = list ? list[i] : i;
    if (records_[slot].snap_epoch != capture_epoch_) copy_to_capture(slot);
  }
  capture_cursor_ = stop;
  if (stop == end) {
    capture_active_ = false;
    capture_done_.store(capture_epoch_, std::memory_order_release);
    return 0;
  }
  return end - stop;
}

void FlowTable::prepare_capture(size_t n) {
  if (capture_held_ || capture_buf_.capacity() >= n) return;
  capture_buf_.clear();
  capture_buf_.resize(n);  // writes every page now (value-initialised slots)
  capture_buf_.clear();    // the room stays
}

void FlowTable::capture_release() {
  capture_held_ = false;
  /* A large capture (a full sync) does not keep its buffer: beyond 1/16 of the capacity
   * (3 bytes a slot) or 64k slots, whichever is more, the memory goes back. */
  const size_t keep = std::max<size_t>(65536, capacity_ / 16);
  if (capture_buf_.capacity() > keep) std::vector<CapturedSlot>().swap(capture_buf_);
}

int FlowTable::apply_state(uint32_t slot, const FlowState *st, uint64_t now_tsc) {
  if (slot >= capacity_) return -EINVAL;
  if (st && !(st->flags & kFlowInUse)) return -EINVAL;
  FlowRecord &r = records_[slot];
  bool was = r.st.flags & kFlowInUse;
  if (st && was && r.st == *st) {
    r.last_seen_tsc = now_tsc;
    return 0;
  }
  if (st && was && inside_key(r.st) == inside_key(*st) && outside_key(r.st) == outside_key(*st) &&
      (r.st.flags & kFlowPortForward) == (st->flags & kFlowPortForward)) {
    // Same flow, new state: keys and indexes stay.
    touch(slot);
    const bool emb_was = emb_member_[slot], emb_now = flow_embryonic(*st);
    if (emb_was && !emb_now) emb_unlink(slot);
    r.st = *st;
    if (!emb_was && emb_now) emb_push(slot);
    r.last_seen_tsc = now_tsc;
    return 0;
  }
  if (was) {
    touch(slot);
    free_slot(slot);
    stats_.removes++;
  }
  if (!st) return 0;
  touch(slot);
  r.st = *st;
  int rc = add_keys(slot);
  if (rc == 0) {
    rc = index_add(r.st);
    if (rc < 0) del_keys(slot);
  }
  if (rc < 0) {
    r.st = FlowState{};
    return rc;
  }
  unlink_free(slot);
  r.last_seen_tsc = now_tsc;
  if (flow_embryonic(r.st)) emb_push(slot);
  size_++;
  // A replicated flow is counted, never refused: the active held it within its own limit.
  if (budget_) budget_->used.fetch_add(1, std::memory_order_relaxed);
  stats_.inserts++;
  return 0;
}

int FlowTable::place(const FlowState &st, uint32_t prefer, uint64_t now_tsc) {
  uint32_t slot = prefer;
  if (slot >= capacity_ || (records_[slot].st.flags & kFlowInUse)) {
    if (free_head_ == kNoSlot) return -ENOSPC;
    slot = free_head_;
  }
  const int rc = apply(slot, &st, now_tsc);
  return rc < 0 ? rc : static_cast<int>(slot);
}

void FlowTable::prefetch_apply(const FlowState &st, uint32_t slot) const {
  if (slot < capacity_) {
    rte_prefetch0(&records_[slot]);
    rte_prefetch0(&applied_share_[slot]);
  }
  const FlowKey in = inside_key(st), out = outside_key(st);
  rte_prefetch0(index_.bucket_of(index_.hash(&in)));
  rte_prefetch0(index_.bucket_of(index_.hash(&out)));
  const FlowKey ek = endpoint_key(st.nat_ip, st.nat_port, st.proto);
  rte_prefetch0(by_map_.home_entry(index_.hash(&ek)));
  if (st.flags & kFlowPortForward) return;
  const FlowKey ik = map_in_key(st.in_ip, st.in_port, st.proto), hk = host_key(st.in_ip),
                tk = toward_key(st.ext_ip, st.nat_ip, st.nat_port, st.proto);
  rte_prefetch0(by_map_.home_entry(index_.hash(&ik)));
  rte_prefetch0(host_.home_entry(index_.hash(&hk)));
  rte_prefetch0(toward_.home_entry(index_.hash(&tk)));
}

void FlowTable::clear() {
  // Flow by flow (the shared port pool, the budget and the mapping events see each go), with
  // each one's lines prefetched kAhead flows before its removal, as the standby's apply does.
  constexpr unsigned kAhead = 8;
  uint32_t ring[kAhead], scan = 0;
  unsigned head = 0, n = 0;
  const auto refill = [&] {
    for (; n < kAhead && scan < capacity_; scan++) {
      if (!(records_[scan].st.flags & kFlowInUse)) continue;
      prefetch_apply(records_[scan].st, scan);
      ring[(head + n++) % kAhead] = scan;
    }
  };
  for (refill(); n > 0; refill()) {
    const uint32_t slot = ring[head];
    head = (head + 1) % kAhead;
    n--;
    remove(slot);
  }
  applied_fp_ = 0;
  cut_fp_valid_ = false;
  std::fill(applied_share_.get(), applied_share_.get() + capacity_, 0u);
}

void FlowTable::refresh_all(uint64_t now_tsc) {
  for (uint32_t i = 0; i < capacity_; i++)
    if (records_[i].st.flags & kFlowInUse) records_[i].last_seen_tsc = now_tsc;
}

}  // namespace ftpair::dp
