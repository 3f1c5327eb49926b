// ftpair-commission: the commissioning step, linked statically so it can run as /init of a minimal
// guest initramfs. As PID 1 it mounts /proc, /sys and /dev, derives the role from the SMBIOS OEM
// strings (or a config drive) and prints the result on the console. Then, when the initramfs
// carries the daemon (/usr/sbin/ftpaird and its base config /etc/ftpair/ftpaird.yaml), it brings
// the management interface up and runs ftpaird with the commissioned config (a warm spare first
// waits to be told which member it replaces; virt/guest.h); otherwise, or when ftpaird exits, it
// powers off. As an ordinary process it only derives and prints. Exit code 2 when it refuses.
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "virt/commission.h"
#include "virt/guest.h"
#include "virt/spare_link.h"

namespace {

using ftpair::Status;
namespace v = ftpair::virt;

const char *kDaemon = "/usr/sbin/ftpaird";
const char *kBaseConfig = "/etc/ftpair/ftpaird.yaml";
const char *kConfig = "/run/ftpair/ftpaird.yaml";
const char *kSpareConfigPath = "/run/ftpair/spare.yaml";  // a spare's, before its claim
const char *kModules = "/lib/ftpair/modules.list";  // kernel modules to load, in order
const char *kIf = "eth0";

// A console line, stamped as ftpaird stamps its log (UTC, microseconds).
void say(const std::string &s) {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  ::gmtime_r(&ts.tv_sec, &t);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &t);
  std::printf("ftpair-guest: %s.%06ldZ %s\n", when, ts.tv_nsec / 1000, s.c_str());
  std::fflush(stdout);
}

std::string get(const v::Commission &c, const char *k) {
  auto it = c.values.find(k);
  return it == c.values.end() ? std::string() : it->second;
}

Status bring_up_network(const v::Commission &c, v::Ipv4Prefix *self) {
  std::ifstream list(kModules);
  for (std::string m; std::getline(list, m);)
    if (!m.empty())
      if (Status st = v::load_module(m); !st.ok()) return st;
  if (Status st = v::parse_ipv4_prefix(get(c, "management.address"), self); !st.ok())
    return ftpair::InvalidArgument("ftpair:management.address " + st.message());
  if (Status st = v::wait_interface(kIf, 10000); !st.ok()) return st;
  if (Status st = v::link_up("lo"); !st.ok()) return st;
  if (Status st = v::set_ipv4(kIf, self); !st.ok()) return st;
  if (Status st = v::link_up(kIf); !st.ok()) return st;
  // The other NICs carry the dataplane (DPDK af_packet ports need them up, without an address).
  if (DIR *d = ::opendir("/sys/class/net")) {
    while (dirent *e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("eth", 0) == 0 && n != kIf)
        if (Status st = v::link_up(n); !st.ok()) say("dataplane NIC " + n + ": " + st.message());
    }
    ::closedir(d);
  }
  return v::send_gratuitous_arp(kIf, self->addr, 2);
}

/* The dataplane NICs for DPDK: every port whose device is a PCI address (the host names them in
 * the OEM strings, virt/spec.h) is bound to uio_pci_generic, and when the daemon's config uses
 * hugepages (dpdk.no_huge: false, which the virtio PMD needs: its DMA addresses are physical)
 * they are reserved: dpdk.memory_mb and 32 MiB for the EAL's own. */
Status prepare_dataplane(const v::Commission &c, const std::string &cfg_text) {
  for (const char *port : {"inside", "outside"}) {
    std::string dev = get(c, (std::string("ports.") + port + ".device").c_str());
    if (dev.empty() || !v::is_pci_address(dev)) continue;
    if (Status st = v::bind_pci(dev, "uio_pci_generic"); !st.ok())
      return ftpair::Unavailable(std::string("ports.") + port + ": " + st.message());
    say(std::string("ports.") + port + ": PCI " + dev + " bound to uio_pci_generic for DPDK");
  }
  unsigned mb = 0;
  try {
    YAML::Node d = YAML::Load(cfg_text)["dpdk"];
    // dpdk.memory_mb's default is ftpaird's (control/config.h: 256).
    if (d && d["no_huge"] && !d["no_huge"].as<bool>()) mb = (d["memory_mb"] ? d["memory_mb"].as<unsigned>() : 256) + 32;
  } catch (const YAML::Exception &e) {
    return ftpair::InvalidArgument(std::string("the daemon's config: ") + e.what());
  }
  if (mb == 0) return Status::Ok();
  if (Status st = v::reserve_hugepages(mb); !st.ok()) return st;
  say("hugepages: " + std::to_string(mb) + " MiB reserved on /dev/hugepages");
  return Status::Ok();
}

// A spare: wait for the host's assume, then take the failed member's address and identity.
Status claim(v::Commission *c, v::Ipv4Prefix *self) {
  std::string port_text = get(*c, "pool.port");
  uint16_t port = static_cast<uint16_t>(port_text.empty() ? v::kClaimPort : std::stoul(port_text));
  say("spare waiting for the host on " + self->text + " port " + std::to_string(port));
  v::Assume a;
  if (Status st = v::wait_for_assume(*self, port, get(*c, "pool.token"), &a); !st.ok()) return st;
  if (Status st = v::apply_assume(a, c); !st.ok()) return st;
  if (Status st = v::set_ipv4(kIf, &a.address); !st.ok()) return st;
  *self = a.address;
  // The first of three announcements: the surviving active (and the host) replace the failed
  // member's MAC. The other two follow once the daemon runs as the node.
  if (Status st = v::send_gratuitous_arp(kIf, self->addr, 1); !st.ok()) return st;
  say("assumed node=" + a.node + " address=" + a.address.text + " peer=" + a.peer);
  return Status::Ok();
}

// The input devices that have a power key (the ACPI power button: button.ko, through evdev.ko).
std::vector<pollfd> power_buttons() {
  std::vector<pollfd> out;
  if (DIR *d = ::opendir("/dev/input")) {
    while (dirent *e = ::readdir(d)) {
      if (std::string(e->d_name).rfind("event", 0) != 0) continue;
      int fd = ::open(("/dev/input/" + std::string(e->d_name)).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) continue;
      unsigned long keys[KEY_MAX / (8 * sizeof(unsigned long)) + 1] = {};
      if (::ioctl(fd, EVIOCGBIT(EV_KEY, sizeof keys), keys) >= 0 &&
          (keys[KEY_POWER / (8 * sizeof(unsigned long))] >> (KEY_POWER % (8 * sizeof(unsigned long)))) & 1)
        out.push_back({fd, POLLIN, 0});
      else
        ::close(fd);
    }
    ::closedir(d);
  }
  if (out.empty()) say("no power button (ACPI button and evdev modules?): an ACPI shutdown cannot stop ftpaird");
  return out;
}

bool power_pressed(std::vector<pollfd> &fds) {
  bool pressed = false;
  for (auto &p : fds) {
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
      // A device that went away: poll would report it at once for ever. Forget it.
      ::close(p.fd);
      p.fd = -1;
      continue;
    }
    if (!(p.revents & POLLIN)) continue;
    input_event ev[16];
    ssize_t n = ::read(p.fd, ev, sizeof ev);
    for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(input_event)); i++)
      pressed |= ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1;
  }
  return pressed;
}

// Starts ftpaird on `config`; with identity_fd >= 0, as a warm spare that awaits its identity on
// that descriptor (fd 3 in the daemon).
pid_t spawn_daemon(const char *config, int identity_fd) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<const char *> argv = {kDaemon, "-c", config};
    if (identity_fd >= 0) {
      // dup2 clears close-on-exec, except onto the same number.
      if (identity_fd == 3 ? ::fcntl(3, F_SETFD, 0) < 0 : ::dup2(identity_fd, 3) < 0) ::_exit(127);
      argv.push_back("--await-identity");
      argv.push_back("3");
    }
    argv.push_back(nullptr);
    ::execv(kDaemon, const_cast<char *const *>(argv.data()));
    std::perror("exec ftpaird");
    ::_exit(127);
  }
  return pid;
}

// Stops a daemon that is not to run: SIGTERM (a spare's clean exit), SIGKILL after 5 s.
void stop_daemon(pid_t pid) {
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 500; i++) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
    ::usleep(10000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

/* A warm spare's daemon, started before the claim (virt/spare_link.h): once it says ready, its
 * dataplane is built and the claim only hands it the node's config. Anything else: it is stopped,
 * and the daemon starts after the claim as before. */
struct Prestarted {
  pid_t pid = -1;
  int fd = -1;
};

Prestarted prestart_daemon(const std::string &cfg) {
  ::mkdir("/run/ftpair", 0755);
  std::ofstream(kSpareConfigPath) << cfg;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    say("no socket pair for a pre-started daemon: it starts after the claim");
    return {};
  }
  pid_t pid = spawn_daemon(kSpareConfigPath, sv[1]);
  ::close(sv[1]);
  if (pid < 0) {
    ::close(sv[0]);
    say("fork failed: the daemon starts after the claim");
    return {};
  }
  std::string line;
  Status st = v::spare_read_line(sv[0], std::chrono::milliseconds(120000), &line);
  if (st.ok() && line == v::kSpareReady) {
    say("daemon pre-started (pid " + std::to_string(pid) + "): its dataplane is built, it takes the claimed node's identity");
    return {pid, sv[0]};
  }
  say("the pre-started daemon is not ready (" + (st.ok() ? "it said '" + line + "'" : st.message()) +
      "): it is stopped and the daemon starts after the claim");
  stop_daemon(pid);
  ::close(sv[0]);
  return {};
}

/* Hands the claimed node's config (already at kConfig) to the pre-started daemon. Its pid when
 * it took it; -1 (it is stopped) when it refused it or is gone. */
pid_t hand_identity(Prestarted &p) {
  std::string answer;
  Status st = v::spare_write_line(p.fd, v::kSpareConfig + std::string(kConfig));
  if (st.ok()) st = v::spare_read_line(p.fd, std::chrono::milliseconds(30000), &answer);
  ::close(p.fd);
  p.fd = -1;
  if (st.ok() && answer == v::kSpareOk) {
    say("the pre-started daemon took the node's config");
    return p.pid;
  }
  say("the pre-started daemon did not take the node's config (" + (st.ok() ? answer : st.message()) +
      "): it is stopped and a new one starts");
  stop_daemon(p.pid);
  return -1;
}

Status run_daemon(v::Commission c) {
  v::Ipv4Prefix self;
  if (Status st = bring_up_network(c, &self); !st.ok()) return st;
  say(std::string(kIf) + " up with " + self.text);
  std::ifstream in(kBaseConfig);
  std::stringstream base;
  base << in.rdbuf();
  std::string cfg;
  // Before a spare's claim too: a claimed spare starts its daemon at once.
  if (Status st = v::merge_into_config(base.str(), c, &cfg); !st.ok()) return st;
  if (Status st = prepare_dataplane(c, cfg); !st.ok()) return st;
  const bool spare = !get(c, "peer.candidates").empty();
  Prestarted pre;
  if (spare) {
    std::string provisional;
    if (Status st = v::merge_into_config(base.str(), v::spare_provisional(c), &provisional); st.ok())
      pre = prestart_daemon(provisional);
    else
      say("no config for a pre-started daemon (" + st.message() + "): it starts after the claim");
    Status st = claim(&c, &self);
    if (st.ok()) st = v::merge_into_config(base.str(), c, &cfg);
    if (!st.ok()) {
      if (pre.pid > 0) {
        ::close(pre.fd);
        stop_daemon(pre.pid);
      }
      return st;
    }
  }
  ::mkdir("/run/ftpair", 0755);
  std::ofstream(kConfig) << cfg;
  pid_t pid = pre.pid > 0 ? hand_identity(pre) : -1;
  if (pid < 0) {
    say("starting ftpaird node=" + get(c, "node.id") + " role=" + get(c, "node.role"));
    pid = spawn_daemon(kConfig, -1);
  }
  if (pid < 0) return ftpair::Unavailable("fork failed");
  // The claim's other two announcements, now that the daemon runs as the node.
  if (spare)
    if (Status st = v::send_gratuitous_arp(kIf, self.addr, 2); !st.ok()) say("gratuitous ARP: " + st.message());
  /* PID 1 reaps every orphan; it returns when ftpaird itself exits. The ACPI power button (the
   * host's `virsh shutdown`, ftpair-virt shutdown) asks ftpaird to stop: SIGTERM, its clean
   * shutdown (no new epochs, a last snapshot), then the guest powers off. */
  std::vector<pollfd> buttons = power_buttons();
  bool asked = false;
  for (;;) {
    int ws = 0;
    pid_t w = ::waitpid(-1, &ws, WNOHANG);
    if (w == pid) {
      say("ftpaird exited: " + std::string(WIFEXITED(ws) ? "status " + std::to_string(WEXITSTATUS(ws))
                                                              : "signal " + std::to_string(WTERMSIG(ws))));
      return Status::Ok();
    }
    if (w > 0) continue;
    if (w < 0 && errno != EINTR && errno != ECHILD) return ftpair::Internal("wait failed");
    if (::poll(buttons.data(), buttons.size(), 100) > 0 && power_pressed(buttons)) {
      // A second press, if ftpaird has not gone: SIGKILL.
      say(asked ? "power button again: killing ftpaird (SIGKILL)" : "power button: stopping ftpaird (SIGTERM), then powering off");
      ::kill(pid, asked ? SIGKILL : SIGTERM);
      asked = true;
    }
  }
}

}  // namespace

int main(int argc, char **argv) {
  bool as_init = ::getpid() == 1;
  std::string dmi_dir = argc > 1 ? argv[1] : "/sys/firmware/dmi";
  std::string drive = argc > 2 ? argv[2] : "/run/ftpair/config-drive";
  if (as_init) {
    ::mount("proc", "/proc", "proc", 0, nullptr);
    ::mount("sysfs", "/sys", "sysfs", 0, nullptr);
    ::mount("devtmpfs", "/dev", "devtmpfs", 0, nullptr);
    ::mount("tmpfs", "/tmp", "tmpfs", 0, nullptr);
    if (!freopen("/dev/console", "w", stdout)) perror("console");
    ::dup2(::fileno(stdout), 2);
  }
  v::Commission c;
  Status st = v::commission_from_environment(dmi_dir, drive, &c);
  int rc = 0;
  if (st.ok()) {
    auto val = [&](const char *k) { auto s = get(c, k); return s.empty() ? std::string("-") : s; };
    std::printf("ftpair-commission: role=%s node=%s management=%s peer=%s pair=%s source=%s\n",
                val("node.role").c_str(), val("node.id").c_str(), val("management.grpc").c_str(),
                (c.values.count("peer.grpc") ? val("peer.grpc") : val("peer.candidates")).c_str(), val("pair").c_str(),
                c.source_of["node.role"].c_str());
  } else {
    std::printf("ftpair-commission: refused: %s\n", st.message().c_str());
    rc = 2;
  }
  std::fflush(stdout);
  if (as_init) {
    if (rc == 0 && ::access(kDaemon, X_OK) == 0)
      if (Status r = run_daemon(c); !r.ok()) say("stopped: " + r.message());
    ::sync();
    ::reboot(RB_POWER_OFF);
    for (;;) ::pause();
  }
  return rc;
}
