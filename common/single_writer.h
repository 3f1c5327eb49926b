/* A value that one thread writes and any thread may read (counters and gauges that the
 * dataplane keeps and /metrics or status read while it runs).
 *
 * A relaxed atomic whose writer does a plain load and a plain store, never a locked
 * read-modify-write: on x86 the cost is that of the plain integer it replaces (a mov, an add,
 * a mov), and a reader on another thread sees a whole value, never a torn or a racy one.
 * Only one thread may write at a time; the writer may change hands (a standby's applier, then
 * the worker after a promotion) only through something that orders the two (a mutex, the
 * interface agent's barrier). Readers get no ordering with other data: a value, not a lock. */
#pragma once

#include <atomic>

namespace ftpair {

template <typename T> class SingleWriter {
 public:
  constexpr SingleWriter(T v = T{}) noexcept : v_(v) {}
  SingleWriter(const SingleWriter &) = delete;
  SingleWriter &operator=(const SingleWriter &) = delete;

  // Any thread.
  T get() const { return v_.load(std::memory_order_relaxed); }
  operator T() const { return get(); }

  // The writer only.
  void set(T v) { v_.store(v, std::memory_order_relaxed); }
  void add(T n) { set(static_cast<T>(get() + n)); }
  void sub(T n) { set(static_cast<T>(get() - n)); }
  void operator++(int) { add(1); }
  void operator--(int) { sub(1); }
  SingleWriter &operator++() { add(1); return *this; }
  SingleWriter &operator--() { sub(1); return *this; }

 private:
  std::atomic<T> v_;
  static_assert(std::atomic<T>::is_always_lock_free);
};

}  // namespace ftpair
