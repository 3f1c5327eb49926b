/* The sd_notify protocol spoken directly (no libsystemd): one AF_UNIX datagram per message
 * to $NOTIFY_SOCKET ("/path" or "@abstract"). A service manager that is not systemd can use
 * it too; without NOTIFY_SOCKET every call is a no-op. */
#pragma once

#include <cstdint>
#include <string>

namespace ftpair {

class SdNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the environment.
  SdNotifier();
  ~SdNotifier();
  SdNotifier(const SdNotifier &) = delete;
  SdNotifier &operator=(const SdNotifier &) = delete;

  bool enabled() const { return fd_ >= 0; }
  // Watchdog interval the manager asked for, 0 = none (WATCHDOG_PID names another process,
  // or no WATCHDOG_USEC).
  uint64_t watchdog_usec() const { return watchdog_usec_; }
  // Sends "KEY=VALUE\n..." as one datagram; false (and errno kept in last_error()) on failure.
  bool send(const std::string &state);
  const std::string &last_error() const { return last_error_; }
  // Explains a NOTIFY_SOCKET or WATCHDOG_USEC that could not be used (empty = fine).
  const std::string &setup_error() const { return setup_error_; }

 private:
  int fd_ = -1;
  std::string path_;  // as given; a leading '@' means the abstract namespace
  uint64_t watchdog_usec_ = 0;
  std::string last_error_, setup_error_;
};

}  // namespace ftpair
