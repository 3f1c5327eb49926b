#include "virt/hook.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "common/file.h"
#include "common/sha256.h"
#include "virt/domain.h"

namespace ftpair::virt {

namespace {

std::string prop(xmlNodePtr n, const char *name) {
  xmlChar *v = xmlGetProp(n, BAD_CAST name);
  std::string s = v ? reinterpret_cast<const char *>(v) : "";
  xmlFree(v);
  return s;
}

std::string text(xmlNodePtr n) {
  xmlChar *v = xmlNodeGetContent(n);
  std::string s = v ? reinterpret_cast<const char *>(v) : "";
  xmlFree(v);
  return s;
}

bool is(xmlNodePtr n, const char *name) {
  return n->type == XML_ELEMENT_NODE && xmlStrcmp(n->name, BAD_CAST name) == 0;
}

xmlNodePtr child(xmlNodePtr n, const char *name) {
  for (xmlNodePtr c = n ? n->children : nullptr; c; c = c->next)
    if (is(c, name)) return c;
  return nullptr;
}

}  // namespace

Status verify_domain_xml(const std::string &xml, const std::string &allowlist_dir) {
  std::unique_ptr<xmlDoc, decltype(&xmlFreeDoc)> doc(
      xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                    XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
      &xmlFreeDoc);
  if (!doc) return InvalidArgument("ftpair boot check: the domain XML on stdin does not parse");
  xmlNodePtr root = xmlDocGetRootElement(doc.get());
  if (root == nullptr || !is(root, "domain")) return InvalidArgument("ftpair boot check: no <domain> on stdin");
  std::string pair;
  for (xmlNodePtr c = child(root, "metadata") ? child(root, "metadata")->children : nullptr; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE && c->ns && c->ns->href && xmlStrcmp(c->ns->href, BAD_CAST kMetaNs) == 0)
      pair = prop(c, "pair");
  std::string name = text(child(root, "name"));
  if (pair.empty()) return Status::Ok();  // not managed by ftpair

  std::string path = allowlist_dir + "/" + pair + ".allow";
  std::ifstream f(path);
  if (!f)
    return FailedPrecondition("ftpair boot check: domain " + name + " belongs to pair " + pair +
                              " but its allow-list " + path + " cannot be read");
  std::map<std::string, std::string> allow;
  for (std::string line; std::getline(f, line);) {
    std::istringstream ls(line);
    std::string dig, file;
    if (ls >> dig >> file) allow[file] = dig;
  }
  std::vector<std::string> files;
  xmlNodePtr os = child(root, "os");
  for (const char *k : {"kernel", "initrd"})
    if (xmlNodePtr n = child(os, k)) files.push_back(text(n));
  for (xmlNodePtr c = child(root, "devices") ? child(root, "devices")->children : nullptr; c; c = c->next) {
    if (!is(c, "disk")) continue;
    xmlNodePtr src = child(c, "source");
    if (src == nullptr) continue;  // an empty CD-ROM drive boots nothing
    std::string file = prop(src, "file");
    if (file.empty()) file = prop(src, "dev");
    if (file.empty())
      return FailedPrecondition("ftpair boot check: domain " + name + " has a " + prop(c, "type") +
                                " disk that cannot be verified (only file and block disks can)");
    files.push_back(file);
  }
  if (files.empty())
    return FailedPrecondition("ftpair boot check: domain " + name + " has no boot image to verify");
  for (const auto &file : files) {
    auto it = allow.find(file);
    if (it == allow.end())
      return PermissionDenied("ftpair boot check: refusing " + name + ": " + file + " is not in the allow-list " + path);
    std::string found;
    if (Status st = sha256_file(file, &found); !st.ok())
      return PermissionDenied("ftpair boot check: refusing " + name + ": cannot digest " + st.message() +
                              " (expected sha256 " + it->second + ")");
    if (found != it->second)
      return PermissionDenied("ftpair boot check: refusing " + name + ": boot image " + file + " expected sha256 " +
                              it->second + ", found " + found);
  }
  return Status::Ok();
}

Status write_allowlist(const std::string &dir, const std::string &pair,
                       const std::map<std::string, std::string> &allowlist) {
  std::string text;
  for (const auto &[file, dig] : allowlist) text += dig + "  " + file + "\n";
  const std::string path = dir + "/" + pair + ".allow";
  // libvirtd's hook reads it (as root); the digests are no secret.
  Status st = make_dirs(dir, 0755);
  if (st.ok()) st = write_file_atomic(path, text, 0644);
  if (!st.ok()) return Unavailable("cannot write allow-list " + path + ": " + st.message());
  return Status::Ok();
}

}  // namespace ftpair::virt
