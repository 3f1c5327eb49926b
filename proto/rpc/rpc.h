/* The gRPC helpers every gRPC user shares: Status <-> grpc::Status at the RPC boundary, TLS
 * credentials from PEM files, and the channel and server arguments (the keepalive policy lives
 * here and nowhere else). */
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ftpair::rpc {

// Our codes map one to one onto gRPC's; anything else from gRPC becomes INTERNAL/UNAVAILABLE.
grpc::Status to_grpc(const Status &s);
Status from_grpc(const grpc::Status &s);

// PEM files of one TLS identity; `ca` set means TLS is on.
struct TlsFiles {
  std::string ca, cert, key;
  bool enabled() const { return !ca.empty(); }
};

/* Client credentials: plaintext when `t` is off, else TLS trusting `t.ca` with `t.cert`/`t.key`
 * as the client certificate. INVALID_ARGUMENT names the config key (`key_prefix`.ca, ...) and
 * the file that cannot be read. */
Status client_credentials(const TlsFiles &t, const std::string &key_prefix,
                          std::shared_ptr<grpc::ChannelCredentials> *out);
// Server credentials: plaintext when off, else mutual TLS (a client certificate signed by ca).
Status server_credentials(const TlsFiles &t, const std::string &key_prefix,
                          std::shared_ptr<grpc::ServerCredentials> *out);

/* The names a TLS client's certificate gives for itself: its subjectAltName entries (DNS names
 * and IP addresses, as gRPC reports them) and its subject common name. Empty without TLS or
 * without a client certificate. */
std::vector<std::string> client_identities(const grpc::ServerContext &ctx);
/* Authorises a peer-only call (beats, takeover, join, the Sync stream) by the client
 * certificate's identity: OK when `tls_on` is false (plaintext: nothing to check; the daemon
 * warns about that), or when one of client_identities() is in `allowed`. PERMISSION_DENIED
 * naming what the certificate says and what is required otherwise. */
Status authorize_identity(const grpc::ServerContext &ctx, bool tls_on, const std::vector<std::string> &allowed,
                          const std::string &what);

/* What a channel carries decides how it reconnects and keeps alive.
 *   CALLS  unary calls to the peer (switchover, takeover, join, initial role): defaults.
 *   SYNC   the Replication.Sync stream: 64 MiB messages, a ping every second even when idle
 *          (a standby whose VM vanished sends no RST), reconnect backoff 100 ms .. 1 s.
 *   BEATS  the Peer.Heartbeat stream: reconnect backoff 20 .. 100 ms, detection is the point.
 *   TOOL   ftpairctl and other tools: unbounded receive (a flows dump can be large). */
enum class ChannelKind { CALLS, SYNC, BEATS, TOOL };
grpc::ChannelArguments channel_args(ChannelKind kind);
std::shared_ptr<grpc::Channel> make_channel(const std::string &addr, std::shared_ptr<grpc::ChannelCredentials> creds,
                                            ChannelKind kind);

/* The server side of the same policy: 64 MiB messages; accept the Sync stream's idle pings
 * (instead of answering GOAWAY "too many pings") and ping back, so a standby notices an
 * active that vanished without closing its stream. */
void apply_server_policy(grpc::ServerBuilder *b);

}  // namespace ftpair::rpc
