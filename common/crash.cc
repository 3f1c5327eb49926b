#include "common/crash.h"

#include <execinfo.h>
#include <signal.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
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

void on_fatal(int sig, siginfo_t *info, void *) {
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
  char name[16] = {};
  if (pthread_getname_np(pthread_self(), name, sizeof name) == 0 && name[0] != '\0') {
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
  // A stack of its own, so that a stack overflow (SIGSEGV on the guard page) still reports.
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
