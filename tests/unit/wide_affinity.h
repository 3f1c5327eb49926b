// The unit tests' EAL (-l 0) pins the main thread to CPU 0. WideAffinity lets the thread, and
// the threads it starts while the object lives (an engine's, gRPC's, a daemon's workers run
// as threads here), use every CPU, as ftpaird's control threads and lcores do; the old
// affinity comes back when it goes.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

namespace ftpair::test {

class WideAffinity {
 public:
  WideAffinity() {
    have_ = pthread_getaffinity_np(pthread_self(), sizeof(old_), &old_) == 0;
    cpu_set_t all;
    CPU_ZERO(&all);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET(static_cast<int>(i), &all);
    pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
  }
  ~WideAffinity() {
    if (have_) pthread_setaffinity_np(pthread_self(), sizeof(old_), &old_);
  }
  WideAffinity(const WideAffinity &) = delete;
  WideAffinity &operator=(const WideAffinity &) = delete;

 private:
  cpu_set_t old_;
  bool have_ = false;
};

}  // namespace ftpair::test
