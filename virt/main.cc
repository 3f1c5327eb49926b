// ftpair-virt: the pair's VM lifecycle on libvirt (deploy, shutdown, fence, warm pool, teardown
// with reuse, lifecycle events), the libvirt qemu hook that verifies boot images, and the
// guest-side commissioning step. Reports are JSON on stdout; errors go to stderr.
// Exit codes: 0 ok, 1 failed, 2 bad input (spec, arguments, environment).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "common/log.h"
#include "virt/commission.h"
#include "virt/conn.h"
#include "virt/domain.h"
#include "virt/events.h"
#include "virt/hook.h"
#include "virt/lifecycle.h"
#include "virt/pool.h"
#include "virt/spec.h"
#include "virt/sync_wait.h"

using namespace ftpair;
using namespace ftpair::virt;

namespace {

int finish(const Status &st, const Json &report) {
  if (!report.is_null()) std::cout << report.dump() << std::endl;
  if (st.ok()) return 0;
  std::cerr << "ftpair-virt: " << st.message() << std::endl;
  return st.code() == Code::INVALID_ARGUMENT ? 2 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  quiet_libvirt_errors();
  CLI::App app{"ftpair-virt: the ftpair pair on libvirt"};
  app.require_subcommand(1);
  // The reports are the output; the libraries' log lines (fence attempts, ...) only on request.
  std::string log_level = "error";
  app.add_option("--log-level", log_level, "library log lines on stderr: trace .. critical, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  std::string spec_path;
  Timeouts t;
  long connect_ms = 5000, acpi_ms = 10000, drain_ms = 5000, checkpoint_ms = 15000, start_ms = 30000, ready_ms = 180000, sync_ms = 120000;
  auto with_spec = [&](CLI::App *c) {
    c->add_option("--spec", spec_path, "pair spec (YAML)")->required();
    c->add_option("--connect-timeout-ms", connect_ms, "deadline for reaching libvirt")->check(CLI::Range(1, 600000));
    c->add_option("--start-timeout-ms", start_ms, "deadline for a domain to run")->check(CLI::Range(1, 600000));
  };

  auto *deploy_c = app.add_subcommand("deploy", "define and start both nodes (reusing retained instances)");
  with_spec(deploy_c);
  auto *shutdown_c = app.add_subcommand("shutdown", "ordered shutdown: drain, VMs, host resources");
  with_spec(shutdown_c);
  auto *teardown_c = app.add_subcommand("teardown", "ordered shutdown, then undefine (or retain with --reuse)");
  with_spec(teardown_c);
  bool reuse = false;
  teardown_c->add_flag("--reuse", reuse, "keep instances the spec's reuse policy retains");
  for (auto *c : {shutdown_c, teardown_c}) {
    c->add_option("--acpi-timeout-ms", acpi_ms, "ACPI shutdown wait before destroy")->check(CLI::Range(0, 600000));
    c->add_option("--drain-timeout-ms", drain_ms, "wait for a daemon to answer")->check(CLI::Range(1, 600000));
    c->add_option("--checkpoint-timeout-ms", checkpoint_ms, "the active's final checkpoint (acknowledged) and snapshot")
        ->check(CLI::Range(1, 600000));
  }
  auto *fence_c = app.add_subcommand("fence", "fence one node with the failover libvirt fencer");
  with_spec(fence_c);
  std::string node, action = "destroy";
  long deadline_ms = 5000;
  fence_c->add_option("--node", node, "a or b")->required();
  std::string fence_domain;
  fence_c->add_option("--domain", fence_domain, "fence this domain (default: the member for --node)");
  fence_c->add_option("--action", action, "destroy or suspend")->check(CLI::IsMember({"destroy", "suspend"}));
  fence_c->add_option("--deadline-ms", deadline_ms, "fence deadline")->check(CLI::Range(1, 600000));
  auto *pool_c = app.add_subcommand("pool", "warm standby pool");
  pool_c->require_subcommand(1);
  auto *fill_c = pool_c->add_subcommand("fill", "define, start and pause spares up to pair.pool.size");
  auto *status_c = pool_c->add_subcommand("status", "list the pair's domains");
  auto *replace_c = pool_c->add_subcommand("replace", "replace a fenced node by a spare (or --fresh)");
  for (auto *c : {fill_c, status_c, replace_c}) with_spec(c);
  std::string failed;
  bool fresh = false;
  replace_c->add_option("--failed", failed, "the fenced node, a or b")->required();
  replace_c->add_flag("--fresh", fresh, "define a new domain instead (the baseline)");
  fill_c->add_option("--ready-timeout-ms", ready_ms, "guest_daemon: wait for a spare to boot to its claim port")
      ->check(CLI::Range(1, 3600000));
  replace_c->add_option("--sync-timeout-ms", sync_ms, "guest_daemon: wait for the replacement to be in sync")
      ->check(CLI::Range(1, 3600000));
  replace_c->add_option("--ready-timeout-ms", ready_ms, "guest_daemon: the refill's wait for a spare to boot")
      ->check(CLI::Range(1, 3600000));
  auto *xml_c = app.add_subcommand("xml", "print the domain XML deploy would define for a node");
  with_spec(xml_c);
  xml_c->add_option("--node", node, "a, b or spare-<i>")->required();

  auto *hook_c = app.add_subcommand("verify-hook", "libvirt qemu hook: verify boot images at prepare/begin");
  std::string allow_dir = "/etc/ftpair/virt";
  std::vector<std::string> hook_args;
  hook_c->add_option("--allowlist-dir", allow_dir, "where deploy writes <pair>.allow");
  hook_c->add_option("args", hook_args, "the hook's arguments: domain operation sub-operation extra")->expected(0, -1);
  hook_c->allow_extras();

  auto *comm_c = app.add_subcommand("commission", "derive role and parameters from SMBIOS / a config drive");
  std::string dmi_dir = "/sys/firmware/dmi", config_drive = "/run/ftpair/config-drive", write_config;
  comm_c->add_option("--dmi-dir", dmi_dir, "SMBIOS sysfs root (entries/11-*/raw, tables/DMI)");
  comm_c->add_option("--config-drive", config_drive, "config drive directory holding ftpair.yaml");
  comm_c->add_option("--write-config", write_config, "write the derived ftpaird config (YAML) here");
  std::string base_config;
  comm_c->add_option("--base", base_config, "merge into this ftpaird config (refusing contradictions)");

  auto *watch_c = app.add_subcommand("watch", "print domain lifecycle events as JSON lines");
  std::string uri = "qemu:///system", domain;
  long timeout_s = 60;
  bool until_died = false;
  watch_c->add_option("--uri", uri, "libvirt URI");
  watch_c->add_option("--domain", domain, "only this domain");
  watch_c->add_option("--timeout-s", timeout_s, "give up after")->check(CLI::Range(1, 86400));
  watch_c->add_option("--connect-timeout-ms", connect_ms, "deadline for reaching libvirt")->check(CLI::Range(1, 600000));
  watch_c->add_flag("--until-died", until_died, "exit 0 at the first crash/destroy/failure event");

  CLI11_PARSE(app, argc, argv);
  log::Level level = log::Level::ERROR;
  if (Status st = log::parse_level(log_level, &level); !st.ok()) return finish(st, Json());
  log::configure(level, log::Format::AUTO);
  t.connect = Ms(connect_ms);
  t.acpi = Ms(acpi_ms);
  t.drain = Ms(drain_ms);
  t.checkpoint = Ms(checkpoint_ms);
  t.start = Ms(start_ms);
  t.ready = Ms(ready_ms);
  t.sync = Ms(sync_ms);

  if (hook_c->parsed()) {
    // libvirt: qemu <domain> <operation> <sub-operation> <extra>; only "prepare begin" gates a start.
    std::vector<std::string> a = hook_args;
    for (auto &e : hook_c->remaining()) a.push_back(e);
    if (a.size() < 3 || a[1] != "prepare" || a[2] != "begin") return 0;
    std::string xml((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    Status st = verify_domain_xml(xml, allow_dir);
    if (!st.ok()) {
      std::cerr << st.message() << std::endl;
      return 1;
    }
    return 0;
  }
  if (comm_c->parsed()) {
    Commission c;
    Status st = commission_from_environment(dmi_dir, config_drive, &c);
    if (!st.ok()) {
      std::cerr << "ftpair-virt: " << st.message() << std::endl;
      return 2;
    }
    Json out = Json::object();
    for (const auto &[k, v] : c.values) out[k] = {{"value", v}, {"source", c.source_of[k]}};
    std::string text = to_config_yaml(c);
    if (!base_config.empty()) {
      std::ifstream b(base_config);
      if (!b) return finish(InvalidArgument("commission: cannot read base config " + base_config), Json());
      std::string base((std::istreambuf_iterator<char>(b)), std::istreambuf_iterator<char>());
      if (Status ms = merge_into_config(base, c, &text); !ms.ok()) {
        std::cerr << "ftpair-virt: " << ms.message() << std::endl;
        return 2;
      }
    }
    if (!write_config.empty()) {
      std::ofstream o(write_config, std::ios::trunc);
      o << "# derived by ftpair-virt commission" << (base_config.empty() ? " (overrides only)" : " from " + base_config)
        << "\n" << text;
      if (!o.flush()) return finish(Unavailable("cannot write " + write_config), Json());
    }
    std::cout << out.dump() << std::endl;
    return 0;
  }
  if (watch_c->parsed()) {
    Status st = watch_lifecycle(
        uri, domain, Ms(connect_ms), std::chrono::seconds(timeout_s),
        [] { std::cout << Json{{"subscribed", true}}.dump() << std::endl; },
        [&](const LifecycleEvent &e) {
          std::cout << Json{{"domain", e.domain}, {"event", e.event}, {"detail", e.detail}, {"peer_died", e.peer_died()}}
                           .dump()
                    << std::endl;
          return !(until_died && e.peer_died());
        });
    return finish(st, Json());
  }

  PairSpec spec;
  if (Status st = load_spec(spec_path, &spec); !st.ok()) return finish(st, Json());
  Json report;
  Status st;
  if (deploy_c->parsed()) st = deploy(spec, t, &report);
  else if (shutdown_c->parsed()) st = shutdown(spec, t, grpc_daemon_ops(), false, false, &report);
  else if (teardown_c->parsed()) st = shutdown(spec, t, grpc_daemon_ops(), true, reuse, &report);
  else if (fence_c->parsed()) st = fence_node(spec, node, fence_domain, action, Ms(deadline_ms), &report);
  else if (fill_c->parsed()) st = pool_fill(spec, t, &report);
  else if (status_c->parsed()) st = pool_status(spec, t, &report);
  else if (replace_c->parsed())
    st = fresh ? replace_fresh(spec, failed, t, wait_standby_in_sync, &report)
               : pool_replace(spec, failed, t, wait_standby_in_sync, &report);
  else if (xml_c->parsed()) {
    NodeSpec n;
    if (node == "a") n = spec.a;
    else if (node == "b") n = spec.b;
    else if (node.rfind("spare-", 0) == 0 && node.size() > 6 && std::isdigit(static_cast<unsigned char>(node[6])))
      n = spec.spare(static_cast<uint32_t>(std::stoul(node.substr(6))));
    else return finish(InvalidArgument("xml: --node must be a, b or spare-<i>"), Json());
    InstanceMeta m{spec.name, n.id, n.role, n.id.rfind("spare", 0) == 0 ? "spare" : "member", image_key(spec, n),
                   n.memory_mib, n.vcpus, "", n.mgmt_address, n.pool_token};
    std::cout << domain_xml(spec, n, spec.domain_name(n.id), "", m);
    return 0;
  }
  return finish(st, report);
}
