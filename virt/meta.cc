#include "virt/meta.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <cstdlib>
#include <sstream>

namespace ftpair::virt {

std::string xml_escape(const std::string &s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string meta_xml(const InstanceMeta &m, bool with_namespace) {
  std::ostringstream x;
  if (with_namespace)
    x << "<" << kMetaPrefix << ":instance xmlns:" << kMetaPrefix << "=\"" << kMetaNs << "\" pair=\"";
  else
    x << "<instance pair=\"";
  x << xml_escape(m.pair) << "\" node=\"" << xml_escape(m.node) << "\" role=\""
    << xml_escape(m.role) << "\" state=\"" << xml_escape(m.state) << "\" image=\"" << xml_escape(m.image)
    << "\" memory_mib=\"" << m.memory_mib << "\" vcpus=\"" << m.vcpus << "\"";
  if (!m.created_network.empty()) x << " created_network=\"" << xml_escape(m.created_network) << "\"";
  if (!m.address.empty()) x << " address=\"" << xml_escape(m.address) << "\"";
  if (!m.token.empty()) x << " token=\"" << xml_escape(m.token) << "\"";
  x << "/>";
  return x.str();
}

bool parse_meta_xml(const std::string &xml, InstanceMeta *m) {
  xmlDocPtr doc = xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "meta.xml", nullptr,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (doc == nullptr) return false;
  xmlNodePtr root = xmlDocGetRootElement(doc);
  bool ok = root != nullptr && xmlStrcmp(root->name, BAD_CAST "instance") == 0;
  if (ok) {
    auto attr = [&](const char *name) {
      xmlChar *v = xmlGetProp(root, BAD_CAST name);
      std::string s = v ? reinterpret_cast<const char *>(v) : "";
      xmlFree(v);
      return s;
    };
    m->pair = attr("pair");
    m->node = attr("node");
    m->role = attr("role");
    m->state = attr("state");
    m->image = attr("image");
    m->created_network = attr("created_network");
    m->address = attr("address");
    m->token = attr("token");
    try {
      m->memory_mib = static_cast<uint32_t>(std::stoul(attr("memory_mib")));
      m->vcpus = static_cast<uint32_t>(std::stoul(attr("vcpus")));
    } catch (...) {
      ok = false;
    }
    ok = ok && !m->pair.empty();
  }
  xmlFreeDoc(doc);
  return ok;
}

bool get_meta(virDomainPtr d, InstanceMeta *m) {
  char *x = virDomainGetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, kMetaNs, VIR_DOMAIN_AFFECT_CURRENT);
  if (x == nullptr) return false;
  bool ok = parse_meta_xml(x, m);
  free(x);
  return ok;
}

}  // namespace ftpair::virt
