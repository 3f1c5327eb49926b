/* A small HTTP server on libmicrohttpd for /metrics (and anything read-only later).
 * Handlers run on MHD's own thread; they must be thread-safe. */
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "control/config.h"
#include "common/status.h"

struct MHD_Daemon;

namespace ftpair {

struct HttpReply {
  int code = 200;
  std::string content_type = "text/plain; version=0.0.4; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  using Handler = std::function<HttpReply()>;
  HttpServer() = default;
  ~HttpServer();
  void route(const std::string &path, Handler h) { routes_[path] = std::move(h); }
  // Binds ep (port 0 picks a free port) and serves. Returns UNAVAILABLE naming the address.
  Status start(const Endpoint &ep);
  void stop();
  uint16_t port() const { return port_; }

 private:
  static int dispatch(void *cls, void *conn, const char *url, const char *method);
  MHD_Daemon *daemon_ = nullptr;
  std::map<std::string, Handler> routes_;
  uint16_t port_ = 0;
};

}  // namespace ftpair
