// gtest main for tests that need DPDK: brings up the EAL once, without hugepages or PCI.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/port.h"

int main(int argc, char **argv) {
  testing::InitGoogleTest(&argc, argv);
  std::string err;
  if (ftpair::dp::eal_init({"--no-huge", "-m", "1024", "--no-pci", "--no-shconf", "--no-telemetry", "-l", "0",
                            "--file-prefix", "ftpair-test-" + std::to_string(getpid()), "--log-level", "*:error"},
                           &err) < 0) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  ftpair::dp::eal_cleanup();
  return rc;
}
