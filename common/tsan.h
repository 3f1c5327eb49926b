/* Happens-before edges that ThreadSanitizer cannot see by itself: a hand-off made inside a
 * library built without -fsanitize=thread (DPDK's lock-free rings, as Debian ships them), or
 * through inline assembly. The releasing thread calls tsan_release(p) once it is done with
 * what p names, the acquiring thread tsan_acquire(p) before it touches it. Without TSan both
 * are empty inline functions: no instruction on any path. */
#pragma once

#if defined(__SANITIZE_THREAD__)
#define FTPAIR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FTPAIR_TSAN 1
#endif
#endif

#ifdef FTPAIR_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace ftpair {

inline void tsan_acquire([[maybe_unused]] const void *p) {
#ifdef FTPAIR_TSAN
  __tsan_acquire(const_cast<void *>(p));
#endif
}

inline void tsan_release([[maybe_unused]] const void *p) {
#ifdef FTPAIR_TSAN
  __tsan_release(const_cast<void *>(p));
#endif
}

}  // namespace ftpair
