#include "tools/ftpairctl/client.h"

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "proto/rpc/rpc.h"

namespace ftpairctl {

namespace {

const char *code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

bool all_digits(const std::string &s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

bool read_file(const std::string &path, std::string *out, std::string *err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    *err = "cannot read " + path + ": " + std::strerror(errno);
    return false;
  }
  *out = ss.str();
  if (out->find("-----BEGIN ") == std::string::npos) {
    *err = path + " is not a PEM file (no \"-----BEGIN\" line)";
    return false;
  }
  return true;
}

// gRPC's "failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:5: Failed to
// connect to remote host: Connection refused" -> "Failed to connect to remote host: Connection
// refused". Anything else is kept whole.
std::string connect_reason(const std::string &msg) {
  static const std::regex re(
      R"(^failed to connect to all addresses; last error: [A-Z_]+: (?:ipv4|ipv6|unix|unix-abstract):\S*?: (.+)$)");
  std::smatch m;
  return std::regex_match(msg, m, re) ? m[1].str() : msg;
}

}  // namespace

std::string check_addr(const std::string &addr) {
  const std::string want = "expected HOST:PORT, [IPv6]:PORT or unix:PATH";
  if (addr.empty()) return "empty address; " + want;
  if (addr.rfind("unix:", 0) == 0) return addr.size() > 5 ? "" : "unix: needs a path; " + want;
  std::string host, port;
  if (addr[0] == '[') {
    size_t close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':')
      return want;
    host = addr.substr(1, close - 1);
    port = addr.substr(close + 2);
    if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEF:.%") != std::string::npos)
      return "bad IPv6 address '" + host + "'; " + want;
  } else {
    size_t colon = addr.rfind(':');
    if (colon == std::string::npos) return "no port; " + want;
    host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
    if (host.empty()) return "no host; " + want;
    if (host.find(':') != std::string::npos) return "an IPv6 address needs brackets; " + want;
    for (char c : host)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
        return "bad host '" + host + "'; " + want;
  }
  if (!all_digits(port) || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535)
    return "bad port '" + port + "' (1..65535); " + want;
  return "";
}

std::string format_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

Client::Client(ConnectOptions opts, std::shared_ptr<grpc::Channel> ch)
    : opts_(std::move(opts)), channel_(std::move(ch)), stub_(ftpair::v1::Control::NewStub(channel_)) {}

Outcome Client::create(const ConnectOptions &opts, std::unique_ptr<Client> *out) {
  if (std::string why = check_addr(opts.addr); !why.empty())
    return Outcome::Fail(kExitUsage, "--addr '" + opts.addr + "': " + why);
  if (!(opts.timeout_s > 0)) return Outcome::Fail(kExitUsage, "--timeout must be a positive number of seconds");

  grpc::ChannelArguments args = ftpair::rpc::channel_args(ftpair::rpc::ChannelKind::TOOL);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  const bool tls = !opts.cacert.empty() || !opts.cert.empty() || !opts.key.empty();
  if (tls) {
    if (opts.cert.empty() != opts.key.empty())
      return Outcome::Fail(kExitUsage, "--cert and --key go together (client certificate and its private key)");
    grpc::SslCredentialsOptions ssl;
    std::string err;
    if (!opts.cacert.empty() && !read_file(opts.cacert, &ssl.pem_root_certs, &err))
      return Outcome::Fail(kExitUsage, "--cacert: " + err);
    if (!opts.cert.empty() && !read_file(opts.cert, &ssl.pem_cert_chain, &err))
      return Outcome::Fail(kExitUsage, "--cert: " + err);
    if (!opts.key.empty() && !read_file(opts.key, &ssl.pem_private_key, &err))
      return Outcome::Fail(kExitUsage, "--key: " + err);
    creds = grpc::SslCredentials(ssl);
    if (!opts.tls_server_name.empty()) args.SetSslTargetNameOverride(opts.tls_server_name);
  } else {
    if (!opts.tls_server_name.empty())
      return Outcome::Fail(kExitUsage, "--tls-server-name needs TLS (--cacert, or --cert and --key)");
    creds = grpc::InsecureChannelCredentials();
  }
  auto ch = grpc::CreateCustomChannel(opts.addr, creds, args);
  if (!ch) return Outcome::Fail(kExitUsage, "--addr '" + opts.addr + "': gRPC cannot make a channel to it");
  out->reset(new Client(opts, std::move(ch)));
  return Outcome::Ok();
}

Outcome Client::call(const std::string &command,
                     const std::function<grpc::Status(ftpair::v1::Control::Stub &, grpc::ClientContext *)> &rpc,
                     double extra_s) {
  grpc::ClientContext ctx;
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(opts_.timeout_s + extra_s));
  ctx.set_deadline(deadline);
  const grpc::Status st = rpc(*stub_, &ctx);
  if (st.ok()) return Outcome::Ok();
  // UNAVAILABLE and DEADLINE_EXCEEDED are also what the daemon itself answers when *its* peer
  // is unreachable or slow. Tell them apart from our own transport failures: the daemon
  // answered if the channel is still connected (UNAVAILABLE), or if the call ended well before
  // our deadline (DEADLINE_EXCEEDED).
  bool from_daemon = false;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE)
    from_daemon = channel_->GetState(false) == GRPC_CHANNEL_READY;
  else if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    from_daemon = std::chrono::system_clock::now() + std::chrono::milliseconds(20) < deadline;
  return map_status(command, st, from_daemon, opts_.timeout_s + extra_s);
}

Outcome Client::map_status(const std::string &command, const grpc::Status &st, bool from_daemon,
                           double within_s) const {
  const std::string msg = st.error_message();
  if (!from_daemon && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::string out = "cannot reach ftpaird at " + opts_.addr + " (is it running?)";
    if (!msg.empty()) out += ": " + connect_reason(msg);
    const bool tls = !opts_.cacert.empty() || !opts_.cert.empty() || !opts_.key.empty();
    if (tls && msg.find("Ssl") != std::string::npos)
      out += " (TLS: check --cacert, --cert and --key against ftpaird's certificates)";
    return Outcome::Fail(kExitUnreachable, out);
  }
  if (!from_daemon && st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    return Outcome::Fail(kExitUnreachable, "ftpaird at " + opts_.addr + " did not answer within " +
                                               format_seconds(within_s) + " s");
  // The daemon answered no. Its messages often begin with "refused: " or "<command> refused: "
  // themselves; say it once.
  std::string m = msg;
  for (const std::string &p : {command + " refused: ", std::string("refused: ")})
    if (m.rfind(p, 0) == 0) {
      m = m.substr(p.size());
      break;
    }
  if (m.empty()) m = "no reason given";
  std::string out = command + " refused: " + m;
  if (st.error_code() != grpc::StatusCode::FAILED_PRECONDITION)
    out += std::string(" [") + code_name(st.error_code()) + "]";
  // The daemon could not reach its peer: DESIGN.md's "3 peer/daemon unreachable".
  Outcome o = Outcome::Fail(st.error_code() == grpc::StatusCode::UNAVAILABLE ? kExitUnreachable : kExitFailed, out);
  o.daemon_answered = true;
  return o;
}

}  // namespace ftpairctl
