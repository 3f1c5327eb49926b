#include "common/crash.h"

#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>

namespace ftpair {
namespace {

const char *g_who = "process";

// Only async-signal-safe calls below: write(2), no stdio, no allocation.
void put(const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void put_num(uint64_t v, int base) {
  char buf[24];
  int i = sizeof buf;
  buf[--i] = '\0';
  do {
    buf[--i] = "0123456789abcdef"[v % static_cast<unsigned>(base)];
    v /= static_cast<unsigned>(base);
  } while (v != 0 && i > 0);
  put(buf + i);
}

// Zero-padded to `width` digits.
void put_padded(uint64_t v, int width) {
  char buf[24];
  for (int i = width - 1; i >= 0; i--, v /= 10) buf[i] = static_cast<char>('0' + v % 10);
  buf[width] = '\0';
  put(buf);
}

/* The time as the log stamps its lines (2026-12-05T14:11:39.763274Z), so that the line sorts
 * among them: by hand, since gmtime_r is not async-signal-safe. The civil date from days since
 * 1970-01-01, in 400-year eras (H. Hinnant's algorithm). */
void put_time() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t secs = ts.tv_sec, days = secs / 86400, sod = secs % 86400;
  const int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
  put_padded(uint64_t(y), 4);
  put("-");
  put_padded(uint64_t(m), 2);
  put("-");
  put_padded(uint64_t(d), 2);
  put("T");
  put_padded(uint64_t(sod / 3600), 2);
  put(":");
  put_padded(uint64_t(sod / 60 % 60), 2);
  put(":");
  put_padded(uint64_t(sod % 60), 2);
  put(".");
  put_padded(uint64_t(ts.tv_nsec / 1000), 6);
  put("Z critical [crash] ");
}

void on_fatal(int sig, siginfo_t *info, void *) {
  put_time();
  put(g_who);
  put(": fatal signal ");
  put_num(static_cast<uint64_t>(sig), 10);
  put(" (");
  put(sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
  put(")");
  if (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL) {
    put(" at address 0x");
    put_num(reinterpret_cast<uintptr_t>(info->si_addr), 16);
  }
  put(" in thread ");
  put_num(static_cast<uint64_t>(::syscall(SYS_gettid)), 10);
  char name[17] = {};
  if (::prctl(PR_GET_NAME, name) == 0 && name[0] != '\0') {
    put(" (");
    put(name);
    put(")");
  }
  put("; its stack:\n");
  void *frames[64];
  int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  // SA_RESETHAND restored the default action: the same signal now ends the process (and
  // dumps core where allowed) with the status a supervisor expects.
  ::raise(sig);
}

}  // namespace

void install_crash_report(const char *who) {
  g_who = who;
  // backtrace() loads libgcc on its first call, which allocates: do that now, not in the handler.
  void *warm[2];
  (void)backtrace(warm, 2);
  /* A stack of its own for the calling (main) thread, so that its stack overflowing (SIGSEGV
   * on the guard page) still reports. Other threads have none: an overflow there dies
   * without the report. */
  static char alt[64 * 1024];
  stack_t ss{};
  ss.ss_sp = alt;
  ss.ss_size = sizeof alt;
  (void)sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) (void)sigaction(sig, &sa, nullptr);
}

}  // namespace ftpair
