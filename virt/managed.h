/* The domains ftpair manages: those whose <metadata> carries an ftpair instance element
 * (virt/domain.h), and how ftpair-virt reads, writes and lists them. */
#pragma once

#include <string>
#include <vector>

#include "virt/conn.h"
#include "virt/domain.h"
#include "virt/spec.h"

namespace ftpair::virt {

struct Managed {
  std::string name;
  InstanceMeta meta;
  int state = VIR_DOMAIN_NOSTATE;
  Dom dom;
};

// Every domain on `conn` carrying ftpair metadata, optionally only of one pair, sorted by name.
std::vector<Managed> list_managed(Conn &conn, const std::string &pair);

// Writes it (persistent, and live when the domain runs); INTERNAL with libvirt's error.
Status set_meta(virDomainPtr d, const InstanceMeta &m);

// The metadata for node `n` of `spec` in `state` (member, spare, retained).
InstanceMeta meta_for(const PairSpec &spec, const NodeSpec &n, const std::string &state);

}  // namespace ftpair::virt
