#include "control/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include <microhttpd.h>

namespace ftpair {

namespace {
MHD_Result answer(void *cls, MHD_Connection *conn, const char *url, const char *method,
                  const char *, const char *, size_t *, void **) {
  auto *routes = static_cast<std::map<std::string, HttpServer::Handler> *>(cls);
  HttpReply reply;
  if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
    reply = HttpReply{405, "text/plain", "only GET\n"};
  } else if (auto it = routes->find(url); it != routes->end()) {
    reply = it->second();
  } else {
    reply = HttpReply{404, "text/plain", "not found; try /metrics\n"};
  }
  MHD_Response *resp = MHD_create_response_from_buffer(reply.body.size(), reply.body.data(),
                                                       MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(resp, "Content-Type", reply.content_type.c_str());
  MHD_Result rc = MHD_queue_response(conn, static_cast<unsigned>(reply.code), resp);
  MHD_destroy_response(resp);
  return rc;
}
}  // namespace

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start(const Endpoint &ep) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(ep.port);
  if (inet_pton(AF_INET, ep.host.c_str(), &sa.sin_addr) != 1)
    return InvalidArgument("metrics address '" + ep.str() + "' is not IPv4");
  daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, ep.port, nullptr,
                             nullptr, &answer, &routes_, MHD_OPTION_SOCK_ADDR, &sa,
                             MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (daemon_ == nullptr) return Unavailable("cannot serve HTTP on " + ep.str() + " (address in use or not local?)");
  const MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info ? info->port : ep.port;
  return Status::Ok();
}

void HttpServer::stop() {
  if (daemon_) {
    MHD_stop_daemon(daemon_);
    daemon_ = nullptr;
  }
}

}  // namespace ftpair
