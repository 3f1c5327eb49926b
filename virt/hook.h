/* Boot verification through libvirt's qemu hook (/etc/libvirt/hooks/qemu): at "prepare begin"
 * libvirtd passes the domain XML on stdin; a non-zero exit with a message on stderr refuses the
 * start. Domains without ftpair metadata are not ours and always pass. */
#pragma once

#include <map>
#include <string>

#include "common/status.h"

namespace ftpair::virt {

// Checks every disk source, kernel and initrd of a managed domain against
// <allowlist_dir>/<pair>.allow ("<sha256>  <path>" lines). The error names the file, the
// expected and the found digest (or why the file cannot be checked).
Status verify_domain_xml(const std::string &domain_xml, const std::string &allowlist_dir);

// Writes <dir>/<pair>.allow atomically (durable, mode 0644), creating `dir` if needed;
// UNAVAILABLE naming the file and the reason.
Status write_allowlist(const std::string &dir, const std::string &pair,
                       const std::map<std::string, std::string> &allowlist);

}  // namespace ftpair::virt
