/* The claim protocol between the host (ftpair-virt's warm pool, virt/pool.h) and a warm spare's
 * init (ftpair-commission, virt/guest.h): one TCP connection to the spare's pool address, one
 * request line, one answer line.
 *
 *     ping                                                          -> ready
 *     assume token=<pool.token> node=<a|b> address=<ip/prefix> peer=<ip:port>
 *                                                                   -> ok | refused: <reason>
 *
 * `ping` is the host's readiness probe before it pauses a new spare. The token is the spare's
 * ftpair:pool.token OEM string, which only the host's libvirt (domain XML and metadata) knows.
 * A refused spare keeps waiting for a good claim. Both ends use this file; it links nothing but
 * sockets (ftpair-commission is static). */
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace ftpair::virt {

// The port of a spare's claim listener; pair.config pool.port overrides it.
inline constexpr uint16_t kClaimPort = 50059;
inline constexpr size_t kMaxClaimLine = 512;

inline constexpr char kClaimPing[] = "ping";
inline constexpr char kClaimReady[] = "ready";
inline constexpr char kClaimOk[] = "ok";
inline constexpr char kClaimRefused[] = "refused: ";

/* Why a spare refuses an assume line: name, status code, text ("{}" takes the detail, such as
 * the field). The answer on the wire is "refused: assume: <text>". */
#define FTPAIR_CLAIM_REFUSALS(X)                                                           \
  X(LINE_TOO_LONG, INVALID_ARGUMENT, "line longer than 512 bytes")                         \
  X(UNKNOWN_REQUEST, INVALID_ARGUMENT, "unknown request '{}'")                             \
  X(NOT_KEY_VALUE, INVALID_ARGUMENT, "'{}' is not key=value")                              \
  X(UNKNOWN_FIELD, INVALID_ARGUMENT, "unknown field '{}'")                                 \
  X(REPEATED_FIELD, INVALID_ARGUMENT, "field '{}' given twice")                            \
  X(MISSING_FIELD, INVALID_ARGUMENT, "field '{}' missing")                                 \
  X(NO_TOKEN, FAILED_PRECONDITION, "this spare has no ftpair:pool.token; it cannot be claimed") \
  X(WRONG_TOKEN, PERMISSION_DENIED, "wrong token")                                         \
  X(BAD_NODE, INVALID_ARGUMENT, "node must be a or b, not '{}'")                           \
  X(BAD_ADDRESS, INVALID_ARGUMENT, "address {}")                                           \
  X(BAD_PEER, INVALID_ARGUMENT, "peer '{}' is not ip:port")

enum class ClaimRefusal : uint8_t {
#define FTPAIR_CLAIM_REFUSAL_ENUM(name, code, text) name,
  FTPAIR_CLAIM_REFUSALS(FTPAIR_CLAIM_REFUSAL_ENUM)
#undef FTPAIR_CLAIM_REFUSAL_ENUM
};

// The refusal as a Status with its code: "assume: <text>", `detail` in place of "{}".
Status claim_refusal(ClaimRefusal r, const std::string &detail = "");

struct Ipv4Prefix {
  uint32_t addr = 0;  // network byte order
  int prefix = 0;
  std::string text;  // as given, "198.18.3.2/24"
};
// Parses "a.b.c.d/n" (n 1..32); INVALID_ARGUMENT quoting the text and saying what is wrong.
Status parse_ipv4_prefix(const std::string &text, Ipv4Prefix *out);

struct Assume {
  std::string node;     // a | b
  Ipv4Prefix address;   // the failed member's management address
  std::string peer;     // ip:port of the surviving member's gRPC
};

// The assume request, without its newline.
std::string assume_line(const std::string &token, const std::string &node, const std::string &address,
                        const std::string &peer);

// Parses one assume line (without or with its trailing newline) for a spare holding `token`.
// Refuses (claim_refusal) an unknown verb, a missing or repeated field, a token that does not
// match, a node other than a/b, a bad address or peer. Never throws.
Status parse_assume(const std::string &line, const std::string &token, Assume *out);

// The answer line (without newline) to a request judged `verdict`: "ok" or "refused: <message>".
std::string claim_answer(const Status &verdict);

// ---- the host's end ----

// Sends one request line to ip:port and returns the answer line; "" when the spare did not
// answer within the deadline.
std::string ask_spare(const std::string &ip, uint16_t port, const std::string &line, std::chrono::milliseconds deadline);

// Polls ping until the spare answers ready; DEADLINE_EXCEEDED naming ip and port otherwise.
Status wait_spare_ready(const std::string &ip, uint16_t port, std::chrono::milliseconds deadline);

// Sends an assume line: OK on "ok"; FAILED_PRECONDITION with the spare's answer (or "no answer on
// the claim port") otherwise.
Status claim_spare(const std::string &ip, uint16_t port, const std::string &line, std::chrono::milliseconds deadline);

// ---- the spare's end ----

// Listens on self:port and answers requests until an assume line is accepted. Each refusal is
// answered to the sender and printed on stdout (the console); the listener keeps waiting.
Status wait_for_assume(const Ipv4Prefix &self, uint16_t port, const std::string &token, Assume *out);

}  // namespace ftpair::virt
