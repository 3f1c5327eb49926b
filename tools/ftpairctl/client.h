/* ftpairctl: connection to one ftpaird and the single place where a gRPC call gets its
 * deadline and its grpc::Status is mapped to an exit code and a message. */
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "control.grpc.pb.h"

namespace ftpairctl {

// Process exit codes (DESIGN.md "Control surface").
enum ExitCode : int {
  kExitOk = 0,           // done
  kExitFailed = 1,       // the daemon refused or failed the request
  kExitUsage = 2,        // bad arguments
  kExitUnreachable = 3,  // daemon unreachable, or no answer before the deadline
};

struct ConnectOptions {
  std::string addr;        // HOST:PORT, [IPv6]:PORT or unix:PATH
  double timeout_s = 3.0;  // deadline of every call
  std::string cacert;      // PEM files; TLS when any of the three is set
  std::string cert;
  std::string key;
  std::string tls_server_name;  // expected name in the server certificate (default: the host)
};

// The result of a step: an exit code and, unless ok, a one-line message without the
// "ftpairctl: " prefix.
struct Outcome {
  int code = kExitOk;
  std::string message;
  bool daemon_answered = false;  // the error is the daemon's answer (not a transport failure)
  bool ok() const { return code == kExitOk; }
  static Outcome Ok() { return {}; }
  static Outcome Fail(int code, std::string message) { return {code, std::move(message), false}; }
};

// Empty when addr is a usable target, otherwise the reason.
std::string check_addr(const std::string &addr);

// "3", "0.5", "1.25": a number of seconds as the user would write it.
std::string format_seconds(double s);

class Client {
 public:
  // Builds the channel (insecure, or TLS/mTLS from the PEM files). Fails with kExitUsage on a
  // bad address or unreadable/incomplete credentials. Does not connect yet.
  static Outcome create(const ConnectOptions &opts, std::unique_ptr<Client> *out);

  // Runs one RPC with the deadline set on its context, and maps the status:
  //   OK -> kExitOk;
  //   no connection (UNAVAILABLE) -> kExitUnreachable "cannot reach ftpaird at ADDR (is it running?)";
  //   our deadline expired -> kExitUnreachable "ftpaird at ADDR did not answer within N s";
  //   the daemon answered an error -> "<command> refused: <daemon's message> [CODE]", with
  //   kExitUnreachable when that code is UNAVAILABLE (the daemon cannot reach its peer),
  //   kExitFailed otherwise.
  // `extra_s` lengthens the deadline for a call the daemon holds on purpose (a long poll).
  Outcome call(const std::string &command,
               const std::function<grpc::Status(ftpair::v1::Control::Stub &, grpc::ClientContext *)> &rpc,
               double extra_s = 0);

  const ConnectOptions &options() const { return opts_; }

 private:
  Client(ConnectOptions opts, std::shared_ptr<grpc::Channel> ch);
  Outcome map_status(const std::string &command, const grpc::Status &st, bool from_daemon, double within_s) const;

  ConnectOptions opts_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ftpair::v1::Control::Stub> stub_;
};

}  // namespace ftpairctl
