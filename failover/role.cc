#include "failover/role.h"

#include <algorithm>
#include <fstream>

#include "common/file.h"

namespace ftpair::fo {

const char *role_name(Role r) {
  switch (r) {
    case Role::BOOT: return "BOOT";
    case Role::STANDBY_SYNCING: return "STANDBY_SYNCING";
    case Role::STANDBY_READY: return "STANDBY_READY";
    case Role::ACTIVE: return "ACTIVE";
    case Role::DRAINING: return "DRAINING";
    case Role::FAULT: return "FAULT";
  }
  return "UNKNOWN";
}

const char *role_kind(Role r) {
  switch (r) {
    case Role::ACTIVE:
    case Role::DRAINING: return "active";
    case Role::STANDBY_SYNCING:
    case Role::STANDBY_READY: return "standby";
    case Role::BOOT: return "boot";
    case Role::FAULT: return "fault";
  }
  return "unknown";
}

namespace {
// Reads a generation file: 0 when absent, DATA_LOSS when not a number.
Status read_gen(const std::string &path, uint64_t *v) {
  std::ifstream f(path);
  *v = 0;
  if (!f) return Status::Ok();
  std::string s;
  f >> s;
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
    return Status(Code::DATA_LOSS, path + ": '" + s + "' is not a number");
  *v = std::stoull(s);
  return Status::Ok();
}
}  // namespace

Status Generation::load() {
  uint64_t main = 0, res = 0;
  Status st = read_gen(dir_ + "/generation", &main);
  if (!st.ok()) return st;
  st = read_gen(dir_ + "/generation.reserved", &res);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> g(mu_);
  // A reservation is not a generation this node used: the active checks a joining
  // standby's generation against its own, so a reserved one must not come back as ours.
  value_ = main;
  reserved_ = res;
  flushed_ = main;
  return Status::Ok();
}

uint64_t Generation::value() const {
  std::lock_guard<std::mutex> g(mu_);
  return value_;
}

uint64_t Generation::reserved() const {
  std::lock_guard<std::mutex> g(mu_);
  return reserved_;
}

bool Generation::unflushed() const {
  std::lock_guard<std::mutex> g(mu_);
  return flushed_ < value_;
}

Status Generation::write_file(const std::string &name, uint64_t v) {
  if (Status st = make_dirs(dir_, 0700); !st.ok()) return st;
  return write_file_atomic(dir_ + "/" + name, std::to_string(v) + "\n", 0600);
}

Status Generation::store(uint64_t v) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (v < value_) return InvalidArgument("generation may not go back from " + std::to_string(value_));
  }
  std::lock_guard<std::mutex> w(write_mu_);
  return write_locked(v);
}

Status Generation::flush() {
  std::unique_lock<std::mutex> w(write_mu_, std::try_to_lock);
  if (!w.owns_lock()) return Status::Ok();  // a write is under way; the next call sees it
  uint64_t v;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (flushed_ >= value_) return Status::Ok();
    v = value_;
  }
  return write_locked(v);
}

Status Generation::write_locked(uint64_t v) {
  {
    std::lock_guard<std::mutex> g(mu_);
    if (flushed_ >= v) {  // a newer value is on disk already: writing v would take it back
      value_ = std::max(value_, v);
      return Status::Ok();
    }
  }
  Status st = write_file("generation", v);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> g(mu_);
  value_ = std::max(value_, v);
  flushed_ = std::max(flushed_, v);
  return Status::Ok();
}

Status Generation::reserve(uint64_t v) {
  Status st = write_file("generation.reserved", v);
  if (!st.ok()) return st;
  std::lock_guard<std::mutex> g(mu_);
  reserved_ = std::max(reserved_, v);
  return Status::Ok();
}

bool Generation::take_reserved(uint64_t at_least) {
  std::lock_guard<std::mutex> g(mu_);
  if (reserved_ < at_least || reserved_ <= value_) return false;
  value_ = reserved_;
  return true;
}

}  // namespace ftpair::fo
