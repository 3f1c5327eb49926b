/* One logging facility for every binary and library (spdlog underneath, one stderr sink).
 *
 * Each component takes its logger once and logs through it:
 *
 *     static auto &L = log::component("engine");
 *     L.info("full sync done: {} records in {:.3f} s", n, s);
 *
 * A line has a level and a component tag, and the shape that its reader needs:
 *   text     2026-12-02T07:48:00.123456Z info  [engine] full sync done: ...
 *   journal  <6>[engine] full sync done: ...        (journald adds the time; <N> is the priority)
 *   json     {"ts":"2026-12-02T07:48:00.123456Z","level":"info","component":"engine","msg":"..."}
 * `auto` picks journal when stderr is the stream that $JOURNAL_STREAM names (systemd set it up),
 * text otherwise. Never log on the packet path: a worker counts, the control plane logs. */
#pragma once

#include <spdlog/logger.h>

#include <string>

#include "common/status.h"

namespace ftpair::log {

enum class Level { TRACE, DEBUG, INFO, WARN, ERROR, CRITICAL, OFF };
enum class Format { AUTO, TEXT, JOURNAL, JSON };

// "trace", "debug", "info", "warn", "error", "critical", "off". INVALID_ARGUMENT lists them.
Status parse_level(const std::string &s, Level *out);
// "auto", "text", "journal", "json". INVALID_ARGUMENT lists them.
Status parse_format(const std::string &s, Format *out);
const char *level_name(Level l);
const char *format_name(Format f);

/* Sets the level and line format of every logger, those made before and after. Call it once
 * the command line is parsed; until then lines are text at info. */
void configure(Level level, Format format);
Level level();
Format format();  // AUTO resolved to what is in force

// The logger of `name` (a short tag: "engine", "failover", ...), made on first use.
spdlog::logger &component(const std::string &name);

}  // namespace ftpair::log
