#pragma once

#include "control/exposition.h"
#include "control/node.h"

namespace ftpair {

// Appends the dataplane families (ports, drops, flows, NAT ports, worker) for node.
void expose_dataplane(Node &node, Exposition &x);

}  // namespace ftpair
