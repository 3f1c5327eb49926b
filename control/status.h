/* Control-plane result type (absl-style, minimal): ok, or an error code with a message.
 * Converted to grpc::Status only at an RPC boundary. */
#pragma once

#include <string>
#include <utility>

namespace ftpair {

enum class Code { OK = 0, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE,
                  DEADLINE_EXCEEDED, ABORTED, INTERNAL, PERMISSION_DENIED, DATA_LOSS };

class Status {
 public:
  Status() = default;
  Status(Code c, std::string msg) : code_(c), msg_(std::move(msg)) {}
  static Status Ok() { return {}; }
  bool ok() const { return code_ == Code::OK; }
  Code code() const { return code_; }
  const std::string &message() const { return msg_; }

 private:
  Code code_ = Code::OK;
  std::string msg_;
};

inline Status InvalidArgument(std::string m) { return {Code::INVALID_ARGUMENT, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {Code::FAILED_PRECONDITION, std::move(m)}; }
inline Status Unavailable(std::string m) { return {Code::UNAVAILABLE, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::INTERNAL, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::NOT_FOUND, std::move(m)}; }
inline Status PermissionDenied(std::string m) { return {Code::PERMISSION_DENIED, std::move(m)}; }

}  // namespace ftpair
