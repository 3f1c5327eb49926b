/* A fatal signal's last words. A daemon that dies on SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT
 * otherwise leaves nothing in its log (its standard error) to say why: the operator sees a
 * process gone and the peer promoted. install_crash_report() makes the process write one line
 * stamped like the log's own, naming the signal, the faulting address and the thread, then
 * its stack (addresses as `binary(+offset)`, for addr2line), and then die of the same signal
 * with its default action (a core dump where one is allowed), so the exit status stays the
 * signal's. */
#pragma once

namespace ftpair {

// `who` (e.g. "ftpaird") starts the line; it must outlive the process (a literal).
void install_crash_report(const char *who);

}  // namespace ftpair
