#include "failover/role.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

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

Status Generation::load() {
  std::ifstream f(dir_ + "/generation");
  if (!f) {
    value_ = 0;
    return Status::Ok();
  }
  std::string s;
  f >> s;
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    return Status(Code::DATA_LOSS, dir_ + "/generation: '" + s + "' is not a number");
  value_ = std::stoull(s);
  return Status::Ok();
}

Status Generation::store(uint64_t v) {
  if (v < value_) return InvalidArgument("generation may not go back from " + std::to_string(value_));
  ::mkdir(dir_.c_str(), 0700);
  const std::string tmp = dir_ + "/generation.tmp", path = dir_ + "/generation";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Internal("cannot write " + tmp + ": " + std::strerror(errno));
  std::string s = std::to_string(v) + "\n";
  bool ok = ::write(fd, s.data(), s.size()) == ssize_t(s.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) return Internal("cannot persist " + path);
  value_ = v;
  return Status::Ok();
}

}  // namespace ftpair::fo
