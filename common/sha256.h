/* SHA-256 (OpenSSL EVP), lowercase hex. */
#pragma once

#include <string>

#include "common/status.h"

namespace ftpair {

std::string sha256_hex(const std::string &bytes);
// Streams the file; an error names the file and the reason.
Status sha256_file(const std::string &path, std::string *hex);

}  // namespace ftpair
