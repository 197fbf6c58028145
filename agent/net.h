// The guest half of the network channel (common/net_frame.h): a process of
// its own, forked by the agent at boot, that turns the host's policy into
// listeners and relays their connections to the host, which decides. It
// never connects anywhere itself except to guest loopback, for ports the
// host exposes.
#pragma once

#include <sandbox/result.h>

namespace sandbox::agent {

// Finds the network port and forks the relay onto it; the agent goes on.
// Must run before lock-down (which takes the device nodes away).
Result<void> start_net_relay();

}  // namespace sandbox::agent
