/* ftpairctl: how replies are shown, as JSON (proto field names) or as text for people. */
#pragma once

#include <string>

#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

#include "control.pb.h"

namespace ftpairctl {

// Every field of msg under its proto (snake_case) name, in .proto order, unset ones included with their
// defaults. 64-bit integers are JSON numbers (not strings, unlike the canonical proto3
// mapping), so `jq '.flows > 0'` works.
nlohmann::ordered_json to_json(const google::protobuf::Message &msg);

// One aligned "label  value" block.
std::string render_status(const ftpair::v1::StatusReply &s);
// One logfmt line (no newline): node=a role=active ... for logs and pipes.
std::string render_status_line(const ftpair::v1::StatusReply &s);
std::string render_switchover(const ftpair::v1::SwitchoverReply &r);
std::string render_checkpoint(const ftpair::v1::CheckpointReply &r, bool snapshot_asked);
// Table "SLOT PROTO INSIDE OUTSIDE NAT STATE", then "N of TOTAL flows at epoch E".
std::string render_flows(const ftpair::v1::FlowsReply &r);

// Helpers, exposed for reuse: "never" for a negative age, "0.012 s ago", "3m05s ago" ...
std::string format_age(double seconds);
std::string format_bytes(uint64_t bytes);

}  // namespace ftpairctl
