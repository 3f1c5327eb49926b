/* A warm spare's daemon, started before the host claims the spare (the line protocol is in
 * virt/spare_link.h). With the spare's provisional config it builds what does not depend on which
 * member the spare replaces: the node (ports, mbuf pool, flow tables, workers not yet running) and
 * the binary's digest. Then it waits for the claimed member's config and takes it when that config
 * builds the same dataplane; the daemon then starts as that member at once. gRPC's one-time costs
 * are paid before the claim too (warm_up_grpc). The EAL keeps the runtime prefix it started with
 * (`ftpair-<spare id>` unless dpdk.file_prefix sets one). */
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "control/config.h"
#include "control/node.h"

namespace ftpair {

struct PreparedSpare {
  std::unique_ptr<Node> node;
  std::string self_sha;  // the running binary's SHA-256 (hex)
};

// The keys of `next` that differ from `running` and that a built node cannot take: the EAL's, the
// ports', the NAT's, the flow and ARP tables', the workers' count and idle sleep, the checkpoint's
// mode and hold. The identity (node, management, peer, failover, upgrade, log) may differ.
std::vector<std::string> dataplane_changes(const Config &running, const Config &next);

// Builds the node and the digest (EAL up), then says "ready" on fd.
Status prepare_spare(const Config &cfg, int fd, PreparedSpare *out);

/* Waits on fd for "config <path>" and answers each line. A bad line, a config that does not load,
 * or one whose dataplane differs (dataplane_changes) is refused and the wait goes on. OK with the
 * taken config and its path once one is answered "ok"; an error when the other end closes the
 * link or `keep_waiting` turns false. */
Status await_identity(int fd, const Config &running, const std::vector<std::string> &overrides,
                      bool (*keep_waiting)(), Config *next, std::string *path);

}  // namespace ftpair
