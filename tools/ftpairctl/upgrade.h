/* ftpairctl upgrade: the in-service upgrade of a pair, driven from the CLI over the nodes'
 * Control services (control/daemon_upgrade.cc has each node's part). */
#pragma once

#include <string>

#include "tools/ftpairctl/client.h"

namespace ftpairctl {

struct UpgradeOptions {
  std::string binary;          // the new ftpaird (empty with rollback)
  bool rollback = false;       // return both nodes to the binary they ran before
  double health_window_s = -1;  // < 0: the nodes' upgrade.health_window_ms
  double sync_timeout_s = -1;   // < 0: the nodes' upgrade.sync_timeout_ms
  bool json = false;
};

// Returns the process exit code; progress goes to stderr, the report to stdout.
int cmd_upgrade(const ConnectOptions &conn, const UpgradeOptions &opts);

}  // namespace ftpairctl
