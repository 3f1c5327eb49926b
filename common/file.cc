#include "common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace ftpair {
namespace {

std::string errno_text(const std::string &what, const std::string &path, int e) {
  return what + " " + path + ": " + std::strerror(e);
}

std::string parent_of(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

Status write_file_atomic(const std::string &path, const std::string &bytes, mode_t mode) {
  // A temporary name of this write's own: two threads writing the same file never share (and
  // truncate, rename or unlink) one temporary file.
  static std::atomic<uint64_t> seq{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(seq++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Internal(errno_text("cannot create", tmp, errno));
  auto fail = [&](const char *what) {
    int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return Internal(errno_text(what, tmp, e));
  };
  const char *p = bytes.data();
  size_t left = bytes.size();
  while (left) {
    ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return fail("cannot write");
    p += w;
    left -= size_t(w);
  }
  // open() applied the umask; the caller's mode is what the file must have.
  if (::fchmod(fd, mode) != 0) return fail("cannot chmod");
  if (::fsync(fd) != 0) return fail("cannot fsync");
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Internal(errno_text("cannot close", tmp, e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return Internal(errno_text("cannot rename " + tmp + " to", path, e));
  }
  const std::string dir = parent_of(path);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Internal(errno_text("cannot open folder", dir, errno));
  int rc = ::fsync(dfd);
  int e = errno;
  ::close(dfd);
  if (rc != 0) return Internal(errno_text("cannot fsync folder", dir, e));
  return Status::Ok();
}

Status read_file(const std::string &path, std::string *out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return NotFound(errno_text("cannot read", path, e));
    return Internal(errno_text("cannot read", path, e));
  }
  out->clear();
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return Internal(errno_text("cannot read", path, e));
    }
    if (n == 0) break;
    out->append(buf, size_t(n));
  }
  ::close(fd);
  return Status::Ok();
}

Status make_dirs(const std::string &dir, mode_t mode) {
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) return Internal(errno_text("cannot create", part, errno));
  }
  return Status::Ok();
}

}  // namespace ftpair
