/* A warm spare's pre-started daemon and its init (ftpair-commission): one socket pair, one line at
 * a time. The spare's init starts ftpaird before the host claims the spare, with the spare's own
 * provisional config and `--await-identity FD`. The daemon does everything that does not depend on
 * which member the spare will replace (the binary's load and digest, the EAL, the ports, the mbuf
 * pool, the flow tables), then:
 *
 *     daemon -> init    ready
 *     init -> daemon    config <path of the claimed node's config>
 *     daemon -> init    ok | refused: <reason>
 *
 * On "ok" the daemon runs as the claimed node at once: its control plane starts and the surviving
 * active's stream reaches it. A refused config leaves the daemon waiting (its dataplane cannot
 * take it: the init stops it and starts a fresh one). The init closing its end stops the daemon.
 * Both ends use this file; it links nothing but sockets (ftpair-commission is static). */
#pragma once

#include <chrono>
#include <string>

#include "common/status.h"

namespace ftpair::virt {

inline constexpr char kSpareReady[] = "ready";
inline constexpr char kSpareConfig[] = "config ";
inline constexpr char kSpareOk[] = "ok";
inline constexpr char kSpareRefused[] = "refused: ";
inline constexpr size_t kMaxSpareLine = 4096;

/* Reads one line (without its newline) from fd within the deadline (a negative deadline: no
 * limit, but `keep_waiting` is asked every 100 ms and a false ends the wait as ABORTED).
 * UNAVAILABLE on end of file or an error, DEADLINE_EXCEEDED on time, INVALID_ARGUMENT for a line
 * longer than kMaxSpareLine (read to its newline and dropped). */
Status spare_read_line(int fd, std::chrono::milliseconds deadline, std::string *line,
                       bool (*keep_waiting)() = nullptr);

// Writes line + "\n" to fd (no SIGPIPE: a closed end is UNAVAILABLE).
Status spare_write_line(int fd, const std::string &line);

// The config path of a "config <path>" line; INVALID_ARGUMENT naming what is wrong otherwise.
Status parse_spare_config(const std::string &line, std::string *path);

}  // namespace ftpair::virt
