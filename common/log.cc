#include "common/log.h"

#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include <spdlog/formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace ftpair::log {
namespace {

using Buf = spdlog::memory_buf_t;

void put(Buf &b, std::string_view s) { b.append(s.data(), s.data() + s.size()); }

const char *short_name(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace: return "trace";
    case spdlog::level::debug: return "debug";
    case spdlog::level::info: return "info";
    case spdlog::level::warn: return "warn";
    case spdlog::level::err: return "error";
    case spdlog::level::critical: return "critical";
    default: return "off";
  }
}

// syslog priorities as sd-daemon(3) reads them from a "<N>" prefix.
int journal_priority(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug: return 7;
    case spdlog::level::info: return 6;
    case spdlog::level::warn: return 4;
    case spdlog::level::err: return 3;
    default: return 2;
  }
}

void put_time(Buf &b, spdlog::log_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  time_t secs = time_t(ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char s[64];
  std::snprintf(s, sizeof s, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, long((ns % 1000000000) / 1000));
  put(b, s);
}

void put_json_string(Buf &b, std::string_view s) {
  b.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': put(b, "\\\""); break;
      case '\\': put(b, "\\\\"); break;
      case '\n': put(b, "\\n"); break;
      case '\r': put(b, "\\r"); break;
      case '\t': put(b, "\\t"); break;
      default:
        if (c < 0x20) {
          char u[8];
          std::snprintf(u, sizeof u, "\\u%04x", c);
          put(b, u);
        } else {
          b.push_back(char(c));
        }
    }
  }
  b.push_back('"');
}

class LineFormatter final : public spdlog::formatter {
 public:
  explicit LineFormatter(Format f) : f_(f) {}
  void format(const spdlog::details::log_msg &m, Buf &b) override {
    std::string_view name(m.logger_name.data(), m.logger_name.size());
    std::string_view msg(m.payload.data(), m.payload.size());
    switch (f_) {
      case Format::JOURNAL:
        b.push_back('<');
        b.push_back(char('0' + journal_priority(m.level)));
        b.push_back('>');
        put(b, "[");
        put(b, name);
        put(b, "] ");
        put(b, msg);
        break;
      case Format::JSON:
        put(b, "{\"ts\":\"");
        put_time(b, m.time);
        put(b, "\",\"level\":\"");
        put(b, short_name(m.level));
        put(b, "\",\"component\":");
        put_json_string(b, name);
        put(b, ",\"msg\":");
        put_json_string(b, msg);
        put(b, "}");
        break;
      default: {
        put_time(b, m.time);
        char lvl[12];
        std::snprintf(lvl, sizeof lvl, " %-5s ", short_name(m.level));
        put(b, lvl);
        put(b, "[");
        put(b, name);
        put(b, "] ");
        put(b, msg);
      }
    }
    b.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<LineFormatter>(f_); }

 private:
  Format f_;
};

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::TRACE: return spdlog::level::trace;
    case Level::DEBUG: return spdlog::level::debug;
    case Level::INFO: return spdlog::level::info;
    case Level::WARN: return spdlog::level::warn;
    case Level::ERROR: return spdlog::level::err;
    case Level::CRITICAL: return spdlog::level::critical;
    case Level::OFF: return spdlog::level::off;
  }
  return spdlog::level::info;
}

bool stderr_is_journal() {
  const char *js = std::getenv("JOURNAL_STREAM");
  if (!js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st;
  if (fstat(2, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

struct Registry {
  std::mutex mu;
  std::shared_ptr<spdlog::sinks::stderr_sink_mt> sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  std::map<std::string, std::shared_ptr<spdlog::logger>> loggers;
  std::atomic<Level> level{Level::INFO};
  std::atomic<Format> format{Format::TEXT};
  Registry() { sink->set_formatter(std::make_unique<LineFormatter>(Format::TEXT)); }
};

Registry &registry() {
  static Registry *r = new Registry;  // never destroyed: threads may log during exit
  return *r;
}

constexpr const char *kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
constexpr const char *kFormats[] = {"auto", "text", "journal", "json"};  // in Format's order

}  // namespace

const char *level_name(Level l) { return kLevels[int(l)]; }
const char *format_name(Format f) { return kFormats[int(f)]; }

Status parse_level(const std::string &s, Level *out) {
  for (int i = 0; i <= int(Level::OFF); ++i)
    if (s == kLevels[i]) {
      *out = Level(i);
      return Status::Ok();
    }
  return InvalidArgument("log level '" + s + "': expected trace, debug, info, warn, error, critical or off");
}

Status parse_format(const std::string &s, Format *out) {
  for (int i = 0; i <= int(Format::JSON); ++i)
    if (s == kFormats[i]) {
      *out = Format(i);
      return Status::Ok();
    }
  return InvalidArgument("log format '" + s + "': expected auto, text, journal or json");
}

void configure(Level level, Format format) {
  if (format == Format::AUTO) format = stderr_is_journal() ? Format::JOURNAL : Format::TEXT;
  Registry &r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  r.level = level;
  r.format = format;
  r.sink->set_formatter(std::make_unique<LineFormatter>(format));
  for (auto &[name, l] : r.loggers) l->set_level(to_spd(level));
}

Level level() { return registry().level.load(); }
Format format() { return registry().format.load(); }

spdlog::logger &component(const std::string &name) {
  Registry &r = registry();
  std::lock_guard<std::mutex> g(r.mu);
  auto it = r.loggers.find(name);
  if (it != r.loggers.end()) return *it->second;
  auto l = std::make_shared<spdlog::logger>(name, r.sink);
  l->set_level(to_spd(r.level));
  l->flush_on(spdlog::level::trace);  // every line at once: a crash must not eat the last words
  r.loggers.emplace(name, l);
  return *l;
}

}  // namespace ftpair::log
