#include "virt/managed.h"

#include <algorithm>
#include <cstdlib>

namespace ftpair::virt {

Status set_meta(virDomainPtr d, const InstanceMeta &m) {
  unsigned flags = VIR_DOMAIN_AFFECT_CONFIG;
  if (virDomainIsActive(d) == 1) flags |= VIR_DOMAIN_AFFECT_LIVE;
  if (virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, meta_xml(m, false).c_str(), kMetaPrefix, kMetaNs,
                           flags) < 0)
    return Internal(std::string("set metadata on ") + virDomainGetName(d) + ": " + virt_error());
  return Status::Ok();
}

std::vector<Managed> list_managed(Conn &conn, const std::string &pair) {
  std::vector<Managed> out;
  virDomainPtr *doms = nullptr;
  int n = virConnectListAllDomains(conn.get(), &doms, 0);
  for (int i = 0; i < n; ++i) {
    Dom d(doms[i]);
    InstanceMeta m;
    if (!get_meta(d.get(), &m) || (!pair.empty() && m.pair != pair)) continue;
    Managed md;
    md.name = virDomainGetName(d.get());
    md.meta = m;
    md.state = domain_state(d.get());
    md.dom = std::move(d);
    out.push_back(std::move(md));
  }
  free(doms);
  std::sort(out.begin(), out.end(), [](const Managed &a, const Managed &b) { return a.name < b.name; });
  return out;
}

InstanceMeta meta_for(const PairSpec &spec, const NodeSpec &n, const std::string &state) {
  InstanceMeta m;
  m.pair = spec.name;
  m.node = n.id;
  m.role = n.role;
  m.state = state;
  m.image = image_key(spec, n);
  m.memory_mib = n.memory_mib;
  m.vcpus = n.vcpus;
  m.address = n.mgmt_address;
  return m;
}

}  // namespace ftpair::virt
