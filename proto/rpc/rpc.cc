#include "proto/rpc/rpc.h"

#include "common/file.h"

namespace ftpair::rpc {

grpc::Status to_grpc(const Status &s) {
  static const grpc::StatusCode map[] = {
      grpc::StatusCode::OK, grpc::StatusCode::INVALID_ARGUMENT, grpc::StatusCode::NOT_FOUND,
      grpc::StatusCode::FAILED_PRECONDITION, grpc::StatusCode::UNAVAILABLE,
      grpc::StatusCode::DEADLINE_EXCEEDED, grpc::StatusCode::ABORTED, grpc::StatusCode::INTERNAL,
      grpc::StatusCode::PERMISSION_DENIED, grpc::StatusCode::DATA_LOSS};
  const auto i = static_cast<size_t>(s.code());
  return grpc::Status(i < sizeof(map) / sizeof(map[0]) ? map[i] : grpc::StatusCode::UNKNOWN, s.message());
}

Status from_grpc(const grpc::Status &s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK: return Status::Ok();
    case grpc::StatusCode::INVALID_ARGUMENT: return InvalidArgument(s.error_message());
    case grpc::StatusCode::NOT_FOUND: return NotFound(s.error_message());
    case grpc::StatusCode::FAILED_PRECONDITION: return FailedPrecondition(s.error_message());
    case grpc::StatusCode::UNAVAILABLE: return Unavailable(s.error_message());
    case grpc::StatusCode::DEADLINE_EXCEEDED: return DeadlineExceeded(s.error_message());
    case grpc::StatusCode::ABORTED: return Aborted(s.error_message());
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return PermissionDenied(s.error_message());
    case grpc::StatusCode::DATA_LOSS: return DataLoss(s.error_message());
    case grpc::StatusCode::CANCELLED: return Unavailable("cancelled: " + s.error_message());
    default: return Internal(s.error_message());
  }
}

namespace {

Status read_pem(const std::string &path, const std::string &key, std::string *out) {
  Status st = read_file(path, out);
  if (st.ok() && out->empty()) st = InvalidArgument("empty file");
  if (!st.ok()) return InvalidArgument("config: " + key + ": cannot read '" + path + "': " + st.message());
  return Status::Ok();
}

}  // namespace

Status client_credentials(const TlsFiles &t, const std::string &key_prefix,
                          std::shared_ptr<grpc::ChannelCredentials> *out) {
  if (!t.enabled()) {
    *out = grpc::InsecureChannelCredentials();
    return Status::Ok();
  }
  grpc::SslCredentialsOptions o;
  Status st = read_pem(t.ca, key_prefix + ".ca", &o.pem_root_certs);
  if (st.ok() && !t.cert.empty()) st = read_pem(t.cert, key_prefix + ".cert", &o.pem_cert_chain);
  if (st.ok() && !t.key.empty()) st = read_pem(t.key, key_prefix + ".key", &o.pem_private_key);
  if (!st.ok()) return st;
  *out = grpc::SslCredentials(o);
  return Status::Ok();
}

Status server_credentials(const TlsFiles &t, const std::string &key_prefix,
                          std::shared_ptr<grpc::ServerCredentials> *out) {
  if (!t.enabled()) {
    *out = grpc::InsecureServerCredentials();
    return Status::Ok();
  }
  grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair kc;
  Status st = read_pem(t.ca, key_prefix + ".ca", &o.pem_root_certs);
  if (st.ok()) st = read_pem(t.cert, key_prefix + ".cert", &kc.cert_chain);
  if (st.ok()) st = read_pem(t.key, key_prefix + ".key", &kc.private_key);
  if (!st.ok()) return st;
  o.pem_key_cert_pairs.push_back(kc);
  *out = grpc::SslServerCredentials(o);
  return Status::Ok();
}

grpc::ChannelArguments channel_args(ChannelKind kind) {
  grpc::ChannelArguments args;
  switch (kind) {
    case ChannelKind::CALLS: break;
    case ChannelKind::SYNC:
      args.SetMaxReceiveMessageSize(64 << 20);
      args.SetMaxSendMessageSize(64 << 20);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      // gRPC stops pinging after 2 pings without data by default; an idle stream to a vanished
      // standby would then look in sync forever.
      args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      /* Each stream on a connection of its own. A new link to the standby's address is made when the
       * old one is stale (the standby restarted, or a spare took the address over); from gRPC's
       * global pool it would get the old link's connection, dead but not yet known to be, and wait
       * for its RST or keepalive, then for the reconnect backoff. */
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      break;
    case ChannelKind::BEATS:
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
      break;
    case ChannelKind::TOOL:
      args.SetMaxReceiveMessageSize(-1);
      break;
  }
  return args;
}

std::shared_ptr<grpc::Channel> make_channel(const std::string &addr, std::shared_ptr<grpc::ChannelCredentials> creds,
                                            ChannelKind kind) {
  if (!creds) creds = grpc::InsecureChannelCredentials();
  return grpc::CreateCustomChannel(addr, creds, channel_args(kind));
}

void apply_server_policy(grpc::ServerBuilder *b) {
  b->SetMaxReceiveMessageSize(64 << 20);
  b->SetMaxSendMessageSize(64 << 20);
  b->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  b->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  b->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  b->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

std::vector<std::string> client_identities(const grpc::ServerContext &ctx) {
  std::vector<std::string> out;
  std::shared_ptr<const grpc::AuthContext> a = ctx.auth_context();
  if (!a || !a->IsPeerAuthenticated()) return out;
  for (const char *prop : {"x509_subject_alternative_name", "x509_common_name"})
    for (const grpc::string_ref &v : a->FindPropertyValues(prop)) out.emplace_back(v.data(), v.size());
  return out;
}

Status authorize_identity(const grpc::ServerContext &ctx, bool tls_on, const std::vector<std::string> &allowed,
                          const std::string &what) {
  if (!tls_on) return Status::Ok();
  const std::vector<std::string> have = client_identities(ctx);
  for (const auto &h : have)
    for (const auto &w : allowed)
      if (h == w) return Status::Ok();
  auto list = [](const std::vector<std::string> &v) {
    std::string s;
    for (const auto &x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? std::string("nothing") : s;
  };
  return PermissionDenied(what + " refused: the client certificate names " + list(have) + "; only the peer (" +
                          list(allowed) + ") may call it");
}

}  // namespace ftpair::rpc
