/* The result type of every control-plane call (absl-style, minimal): ok, or a code with a
 * message that names what failed and why. It is [[nodiscard]]: a Status that nobody looks at
 * is a compile error, so a caller either handles it or says why not with `(void)`.
 * Converted to grpc::Status only at an RPC boundary (rpc/status.h). */
#pragma once

#include <string>
#include <utility>

namespace ftpair {

enum class Code { OK = 0, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE,
                  DEADLINE_EXCEEDED, ABORTED, INTERNAL, PERMISSION_DENIED, DATA_LOSS };

// The code's name in upper case ("FAILED_PRECONDITION"), for logs and messages.
const char *code_name(Code c);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code c, std::string msg) : code_(c), msg_(std::move(msg)) {}
  static Status Ok() { return {}; }
  bool ok() const { return code_ == Code::OK; }
  Code code() const { return code_; }
  const std::string &message() const { return msg_; }
  // "CODE: message", or "OK".
  std::string str() const;

 private:
  Code code_ = Code::OK;
  std::string msg_;
};

inline Status InvalidArgument(std::string m) { return {Code::INVALID_ARGUMENT, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::NOT_FOUND, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {Code::FAILED_PRECONDITION, std::move(m)}; }
inline Status Unavailable(std::string m) { return {Code::UNAVAILABLE, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {Code::DEADLINE_EXCEEDED, std::move(m)}; }
inline Status Aborted(std::string m) { return {Code::ABORTED, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::INTERNAL, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {Code::PERMISSION_DENIED, std::move(m)}; }
inline Status DataLoss(std::string m) { return {Code::DATA_LOSS, std::move(m)}; }

}  // namespace ftpair
