/* Files that must survive a crash whole or not at all. */
#pragma once

#include <sys/types.h>

#include <string>

#include "common/status.h"

namespace ftpair {

/* Writes `bytes` to `path` atomically: a temporary file beside it (a name of its own per call), written in full, fsynced,
 * given `mode`, renamed over `path`, then the directory fsynced so that the rename itself
 * survives a crash. A reader sees the old content or the new, never a mix. On error the
 * temporary file is removed and the message names the file and the errno text. */
Status write_file_atomic(const std::string &path, const std::string &bytes, mode_t mode = 0600);

// Reads a whole file. NOT_FOUND if it does not exist, INTERNAL on any other error.
Status read_file(const std::string &path, std::string *out);

// mkdir -p with `mode` for the folders it creates. INTERNAL names the folder that failed.
Status make_dirs(const std::string &dir, mode_t mode = 0755);

}  // namespace ftpair
