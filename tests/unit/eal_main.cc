// gtest main for tests that need DPDK: brings up the EAL once, without hugepages or PCI.
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rte_eal.h>

int main(int argc, char **argv) {
  testing::InitGoogleTest(&argc, argv);
  std::string prefix = "ftpair-test-" + std::to_string(getpid());
  std::vector<std::string> args = {"unit-test", "--no-huge", "-m", "1024", "--no-pci", "--no-shconf",
                                   "--no-telemetry", "-l", "0", "--file-prefix", prefix,
                                   "--log-level", "*:error"};
  std::vector<char *> av;
  for (auto &a : args) av.push_back(a.data());
  if (rte_eal_init(static_cast<int>(av.size()), av.data()) < 0) {
    fprintf(stderr, "EAL init failed\n");
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  rte_eal_cleanup();
  return rc;
}
