#include "dataplane/flow_table.h"

#include <cerrno>
#include <cstring>
#include <netinet/in.h>

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>

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

inline void *slot_data(uint32_t slot, uint8_t dir) {
  return reinterpret_cast<void *>((static_cast<uintptr_t>(slot) << 1) | dir);
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
         a.proto == b.proto && a.tcp_state == b.tcp_state && a.flags == b.flags;
}

FlowKey inside_key(const FlowState &s) {
  return FlowKey{s.in_ip, s.ext_ip, s.in_port, s.ext_port, s.proto, 0, 0};
}

FlowKey outside_key(const FlowState &s) {
  return FlowKey{s.ext_ip, s.nat_ip, s.ext_port, s.nat_port, s.proto, 1, 0};
}

std::unique_ptr<FlowTable> FlowTable::create(const FlowTableConfig &cfg, std::string *err) {
  if (cfg.capacity < 16 || cfg.capacity > (1u << 26)) {
    *err = "flows.capacity must be between 16 and 67108864";
    return nullptr;
  }
  std::unique_ptr<FlowTable> t(new FlowTable());
  t->capacity_ = cfg.capacity;
  rte_hash_parameters hp{};
  hp.name = cfg.name.c_str();
  // Two keys per flow; the extendable bucket table guarantees every key fits.
  hp.entries = cfg.capacity * 2;
  hp.key_len = sizeof(FlowKey);
  hp.hash_func = rte_hash_crc;
  hp.hash_func_init_val = 0x9e3779b9;
  hp.socket_id = cfg.socket_id;
  hp.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
  t->hash_ = rte_hash_create(&hp);
  if (t->hash_ == nullptr) {
    *err = std::string("rte_hash_create failed: ") + rte_strerror(rte_errno) +
           " (raise dpdk.memory_mb or lower flows.capacity)";
    return nullptr;
  }
  t->records_ = static_cast<FlowRecord *>(
      rte_zmalloc_socket("ftpair_flow_records", sizeof(FlowRecord) * size_t(cfg.capacity), 64,
                         cfg.socket_id));
  if (t->records_ == nullptr) {
    *err = "cannot allocate the flow record array (raise dpdk.memory_mb)";
    return nullptr;
  }
  for (uint32_t i = 0; i < cfg.capacity; i++) {
    t->records_[i].next_free = i + 1 < cfg.capacity ? i + 1 : kNoSlot;
    t->records_[i].prev_free = i == 0 ? kNoSlot : i - 1;
  }
  t->free_head_ = 0;
  t->dirty_[0].reserve(cfg.capacity);
  t->dirty_[1].reserve(cfg.capacity);
  t->capture_buf_.reserve(cfg.capacity);
  for (auto &v : t->port_refs_) v.assign(65536, 0);
  return t;
}

FlowTable::~FlowTable() {
  if (hash_) rte_hash_free(hash_);
  if (records_) rte_free(records_);
}

int FlowTable::lookup(const FlowKey &key) const {
  void *data = nullptr;
  int rc = rte_hash_lookup_data(hash_, &key, &data);
  if (rc < 0) return -ENOENT;
  return static_cast<int>(reinterpret_cast<uintptr_t>(data) >> 1);
}

void FlowTable::lookup_bulk(const FlowKey *const *keys, unsigned n, int32_t *slots) const {
  void *data[RTE_HASH_LOOKUP_BULK_MAX];
  uint64_t hits = 0;
  rte_hash_lookup_bulk_data(hash_, reinterpret_cast<const void **>(const_cast<const FlowKey **>(keys)),
                            n, &hits, data);
  for (unsigned i = 0; i < n; i++)
    slots[i] = (hits >> i) & 1 ? static_cast<int32_t>(reinterpret_cast<uintptr_t>(data[i]) >> 1) : -1;
}

void FlowTable::port_ref(const FlowState &st, int delta) {
  int pi = proto_index(st.proto);
  if (pi < 0) return;
  uint16_t port = ntohs(st.nat_port);
  uint32_t &ref = port_refs_[pi][port];
  if (delta > 0) {
    if (ref++ == 0) ports_used_[pi]++;
  } else if (ref > 0) {
    if (--ref == 0) ports_used_[pi]--;
  }
}

uint32_t FlowTable::ports_in_use(uint8_t proto) const {
  int pi = proto_index(proto);
  return pi < 0 ? 0 : ports_used_[pi];
}

int FlowTable::add_keys(uint32_t slot) {
  const FlowState &st = records_[slot].st;
  FlowKey in = inside_key(st), out = outside_key(st);
  if (rte_hash_lookup(hash_, &in) >= 0 || rte_hash_lookup(hash_, &out) >= 0) return -EEXIST;
  int rc = rte_hash_add_key_data(hash_, &in, slot_data(slot, 0));
  if (rc < 0) return rc;
  rc = rte_hash_add_key_data(hash_, &out, slot_data(slot, 1));
  if (rc < 0) {
    rte_hash_del_key(hash_, &in);
    return rc;
  }
  return 0;
}

void FlowTable::del_keys(uint32_t slot) {
  const FlowState &st = records_[slot].st;
  FlowKey in = inside_key(st), out = outside_key(st);
  rte_hash_del_key(hash_, &in);
  rte_hash_del_key(hash_, &out);
}

int FlowTable::insert(const FlowState &st, uint64_t now_tsc) {
  if (free_head_ == kNoSlot) {
    stats_.insert_full++;
    return -ENOSPC;
  }
  uint32_t slot = free_head_;
  FlowRecord &r = records_[slot];
  touch(slot);  // the capture may still need this slot's previous (free) state
  r.st = st;
  r.st.flags |= kFlowInUse;
  int rc = add_keys(slot);
  if (rc < 0) {
    r.st = FlowState{};
    if (rc == -ENOSPC) stats_.insert_full++;
    return rc;
  }
  unlink_free(slot);
  r.last_seen_tsc = now_tsc;
  r.packets = 0;
  size_++;
  stats_.inserts++;
  port_ref(r.st, +1);
  return static_cast<int>(slot);
}

void FlowTable::free_slot(uint32_t slot) {
  FlowRecord &r = records_[slot];
  port_ref(r.st, -1);
  del_keys(slot);
  r.st = FlowState{};
  r.next_free = free_head_;
  r.prev_free = kNoSlot;
  if (free_head_ != kNoSlot) records_[free_head_].prev_free = slot;
  free_head_ = slot;
  size_--;
}

void FlowTable::unlink_free(uint32_t slot) {
  FlowRecord &r = records_[slot];
  if (r.prev_free != kNoSlot)
    records_[r.prev_free].next_free = r.next_free;
  else
    free_head_ = r.next_free;
  if (r.next_free != kNoSlot) records_[r.next_free].prev_free = r.prev_free;
  r.next_free = r.prev_free = kNoSlot;
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
  if (capture_kind_ == CaptureKind::FULL && !in_use) return;
  // FULL_AND_DELETIONS: also the slots freed in the captured epoch, so a stream already in
  // sync can take the capture as that epoch's changes while another one is fully synced.
  if (capture_kind_ == CaptureKind::FULL_AND_DELETIONS && !in_use && r.dirty_epoch != capture_epoch_) return;
  CapturedSlot c{};
  c.slot = slot;
  c.in_use = in_use;
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
  if (capture) {
    capture_buf_.clear();
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

void FlowTable::capture_release() {
  capture_held_ = false;
}

int FlowTable::apply(uint32_t slot, const FlowState *st, uint64_t now_tsc) {
  if (slot >= capacity_) return -EINVAL;
  if (st && !(st->flags & kFlowInUse)) return -EINVAL;
  FlowRecord &r = records_[slot];
  bool was = r.st.flags & kFlowInUse;
  if (st && was && r.st == *st) {
    r.last_seen_tsc = now_tsc;
    return 0;
  }
  if (st && was && inside_key(r.st) == inside_key(*st) && outside_key(r.st) == outside_key(*st)) {
    // Same flow, new state: keys stay.
    touch(slot);
    r.st = *st;
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
  if (rc < 0) {
    r.st = FlowState{};
    return rc;
  }
  unlink_free(slot);
  r.last_seen_tsc = now_tsc;
  size_++;
  stats_.inserts++;
  port_ref(r.st, +1);
  return 0;
}

void FlowTable::clear() {
  for (uint32_t i = 0; i < capacity_; i++)
    if (records_[i].st.flags & kFlowInUse) remove(i);
}

void FlowTable::refresh_all(uint64_t now_tsc) {
  for (uint32_t i = 0; i < capacity_; i++)
    if (records_[i].st.flags & kFlowInUse) records_[i].last_seen_tsc = now_tsc;
}

}  // namespace ftpair::dp
