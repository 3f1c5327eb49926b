/* Starting and reaping other programs from a process that holds DPDK memory. posix_spawn
 * (vfork-like) makes no copy of this process's page tables, which would hold the
 * address-space lock long enough to delay the real-time heartbeat threads. */
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace ftpair {

/* Starts `path` with `argv` (argv[0] included) and the caller's environment. `fd` becomes
 * `as_fd` in the child (e.g. a pipe's write end as 1 or 3) and every descriptor from
 * as_fd + 1 up is closed; fd < 0 passes nothing. INTERNAL names the program and errno. */
Status spawn(const std::string &path, const std::vector<std::string> &argv, int fd, int as_fd, pid_t *pid);

// "exit code N", "signal Killed", ...: a waitpid() status in words.
std::string exit_text(int wait_status);

/* Runs `path` with `args` and returns the first `max_bytes` of its standard output; waits at
 * most `timeout` (then kills it). FAILED_PRECONDITION when it exits non-zero, is killed or
 * times out, with the reason. */
Status run_capture(const std::string &path, const std::vector<std::string> &args, std::chrono::milliseconds timeout,
                   std::string *out, size_t max_bytes = 4096);

}  // namespace ftpair
