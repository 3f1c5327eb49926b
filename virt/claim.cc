#include "virt/claim.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "virt/sockets.h"

namespace ftpair::virt {

namespace {

using Ms = std::chrono::milliseconds;

struct RefusalText {
  Code code;
  const char *text;
};
constexpr RefusalText kRefusals[] = {
#define FTPAIR_CLAIM_REFUSAL_TEXT(name, code, text) {Code::code, text},
    FTPAIR_CLAIM_REFUSALS(FTPAIR_CLAIM_REFUSAL_TEXT)
#undef FTPAIR_CLAIM_REFUSAL_TEXT
};

bool valid_endpoint(const std::string &s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 >= s.size() || s.size() - colon - 1 > 5) return false;
  in_addr a{};
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a) != 1) return false;
  for (size_t i = colon + 1; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  unsigned long port = std::stoul(s.substr(colon + 1));
  return port >= 1 && port <= 65535;
}

// Reads one line (without its newline) of at most `max` bytes, or until the socket's timeout.
std::string read_line(int fd, size_t max) {
  std::string line;
  char ch;
  while (line.size() < max && ::read(fd, &ch, 1) == 1 && ch != '\n') line += ch;
  return line;
}

}  // namespace

Status claim_refusal(ClaimRefusal r, const std::string &detail) {
  const RefusalText &t = kRefusals[static_cast<size_t>(r)];
  std::string text = t.text;
  if (auto at = text.find("{}"); at != std::string::npos) text.replace(at, 2, detail);
  return Status(t.code, "assume: " + text);
}

Status parse_ipv4_prefix(const std::string &text, Ipv4Prefix *out) {
  auto slash = text.find('/');
  if (slash == std::string::npos || slash + 1 >= text.size() || text.size() - slash - 1 > 2)
    return InvalidArgument("'" + text + "' is not ip/prefix");
  in_addr a{};
  if (inet_pton(AF_INET, text.substr(0, slash).c_str(), &a) != 1)
    return InvalidArgument("'" + text + "': not an IPv4 address");
  int prefix = 0;
  for (size_t i = slash + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return InvalidArgument("'" + text + "': prefix is not a number");
    prefix = prefix * 10 + (text[i] - '0');
  }
  if (prefix < 1 || prefix > 32) return InvalidArgument("'" + text + "': prefix must be 1..32");
  out->addr = a.s_addr;
  out->prefix = prefix;
  out->text = text;
  return Status::Ok();
}

std::string assume_line(const std::string &token, const std::string &node, const std::string &address,
                        const std::string &peer) {
  return "assume token=" + token + " node=" + node + " address=" + address + " peer=" + peer;
}

Status parse_assume(const std::string &line_in, const std::string &token, Assume *out) {
  using R = ClaimRefusal;
  std::string line = line_in;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.size() > kMaxClaimLine) return claim_refusal(R::LINE_TOO_LONG);
  std::istringstream in(line);
  std::string verb;
  in >> verb;
  if (verb != "assume") return claim_refusal(R::UNKNOWN_REQUEST, verb.substr(0, 32));
  std::map<std::string, std::string> f;
  for (std::string w; in >> w;) {
    auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0) return claim_refusal(R::NOT_KEY_VALUE, w.substr(0, 32));
    std::string k = w.substr(0, eq);
    if (k != "token" && k != "node" && k != "address" && k != "peer") return claim_refusal(R::UNKNOWN_FIELD, k.substr(0, 32));
    if (!f.emplace(k, w.substr(eq + 1)).second) return claim_refusal(R::REPEATED_FIELD, k);
  }
  for (const char *k : {"token", "node", "address", "peer"})
    if (f[k].empty()) return claim_refusal(R::MISSING_FIELD, k);
  if (token.empty()) return claim_refusal(R::NO_TOKEN);
  // Constant-time enough for a 32-byte secret: compare every byte.
  unsigned diff = f["token"].size() ^ token.size();
  for (size_t i = 0; i < f["token"].size() && i < token.size(); ++i) diff |= f["token"][i] ^ token[i];
  if (diff != 0) return claim_refusal(R::WRONG_TOKEN);
  if (f["node"] != "a" && f["node"] != "b") return claim_refusal(R::BAD_NODE, f["node"]);
  if (Status st = parse_ipv4_prefix(f["address"], &out->address); !st.ok())
    return claim_refusal(R::BAD_ADDRESS, st.message());
  if (!valid_endpoint(f["peer"])) return claim_refusal(R::BAD_PEER, f["peer"]);
  out->node = f["node"];
  out->peer = f["peer"];
  return Status::Ok();
}

std::string claim_answer(const Status &verdict) {
  return verdict.ok() ? kClaimOk : kClaimRefused + verdict.message();
}

std::string ask_spare(const std::string &ip, uint16_t port, const std::string &line, Ms deadline) {
  Fd fd(connect_within(ip, port, deadline));
  if (fd.fd < 0) return "";
  timeval tv{static_cast<time_t>(deadline.count() / 1000), static_cast<suseconds_t>(deadline.count() % 1000 * 1000)};
  ::setsockopt(fd.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string msg = line + "\n";
  if (::write(fd.fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) return "";
  return read_line(fd.fd, 1024);
}

Status wait_spare_ready(const std::string &ip, uint16_t port, Ms deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (ask_spare(ip, port, kClaimPing, Ms(1000)) == kClaimReady) return Status::Ok();
    std::this_thread::sleep_for(Ms(250));
  }
  return DeadlineExceeded("spare at " + ip + " did not report ready on port " + std::to_string(port) + " within " +
                          std::to_string(deadline.count()) + " ms");
}

Status claim_spare(const std::string &ip, uint16_t port, const std::string &line, Ms deadline) {
  std::string answer = ask_spare(ip, port, line, deadline);
  if (answer == kClaimOk) return Status::Ok();
  return FailedPrecondition(answer.empty() ? "no answer on the claim port" : answer);
}

Status wait_for_assume(const Ipv4Prefix &self, uint16_t port, const std::string &token, Assume *out) {
  Fd ls(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (ls.fd < 0) return Unavailable(errno_text("socket"));
  int one = 1;
  ::setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = self.addr;
  if (::bind(ls.fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || ::listen(ls.fd, 4) != 0)
    return Unavailable(errno_text("listen on " + self.text + " port " + std::to_string(port)));
  for (;;) {
    Fd c(::accept4(ls.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (c.fd < 0) {
      if (errno == EINTR) continue;
      return Unavailable(errno_text("accept"));
    }
    timeval tv{2, 0};  // a client that connects and says nothing cannot hold the spare
    ::setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string line = read_line(c.fd, kMaxClaimLine + 1);
    if (line == kClaimPing || line == std::string(kClaimPing) + "\r") {
      const std::string ready = std::string(kClaimReady) + "\n";
      if (::write(c.fd, ready.data(), ready.size()) < 0) { /* gone */ }
      continue;
    }
    Status st = parse_assume(line, token, out);
    const std::string reply = claim_answer(st) + "\n";
    if (::write(c.fd, reply.data(), reply.size()) < 0) { /* the sender is gone; its problem */ }
    if (st.ok()) return st;
    std::printf("ftpair-guest: %s", reply.c_str());
    std::fflush(stdout);
  }
}

}  // namespace ftpair::virt
