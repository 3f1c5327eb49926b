// ftpair-commission: the commissioning step on its own, linked statically so it can run as /init
// of a minimal guest initramfs. As PID 1 it mounts /proc, /sys and /dev, derives the role from the
// SMBIOS OEM strings (or a config drive), prints the result on the console and powers off.
// As an ordinary process it only derives and prints. Exit code 2 when it refuses.
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "virt/commission.h"

int main(int argc, char **argv) {
  bool as_init = ::getpid() == 1;
  std::string dmi_dir = argc > 1 ? argv[1] : "/sys/firmware/dmi";
  std::string drive = argc > 2 ? argv[2] : "/run/ftpair/config-drive";
  if (as_init) {
    ::mount("proc", "/proc", "proc", 0, nullptr);
    ::mount("sysfs", "/sys", "sysfs", 0, nullptr);
    ::mount("devtmpfs", "/dev", "devtmpfs", 0, nullptr);
    if (!freopen("/dev/console", "w", stdout)) perror("console");
  }
  ftpair::virt::Commission c;
  ftpair::Status st = ftpair::virt::commission_from_environment(dmi_dir, drive, &c);
  int rc = 0;
  if (st.ok()) {
    auto v = [&](const char *k) { auto it = c.values.find(k); return it == c.values.end() ? std::string("-") : it->second; };
    std::printf("ftpair-commission: role=%s node=%s management=%s peer=%s pair=%s source=%s\n",
                v("node.role").c_str(), v("node.id").c_str(), v("management.grpc").c_str(),
                (c.values.count("peer.grpc") ? v("peer.grpc") : v("peer.candidates")).c_str(), v("pair").c_str(),
                c.source_of["node.role"].c_str());
  } else {
    std::printf("ftpair-commission: refused: %s\n", st.message().c_str());
    rc = 2;
  }
  std::fflush(stdout);
  if (as_init) {
    ::sync();
    ::reboot(RB_POWER_OFF);
    for (;;) ::pause();
  }
  return rc;
}
