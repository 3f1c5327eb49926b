#include "common/status.h"

namespace ftpair {

const char *code_name(Code c) {
  switch (c) {
    case Code::OK: return "OK";
    case Code::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case Code::NOT_FOUND: return "NOT_FOUND";
    case Code::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case Code::UNAVAILABLE: return "UNAVAILABLE";
    case Code::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case Code::ABORTED: return "ABORTED";
    case Code::INTERNAL: return "INTERNAL";
    case Code::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case Code::DATA_LOSS: return "DATA_LOSS";
  }
  return "UNKNOWN";
}

std::string Status::str() const {
  if (ok()) return "OK";
  return std::string(code_name(code_)) + ": " + msg_;
}

}  // namespace ftpair
