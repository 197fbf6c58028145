// What the daemon keeps of root: after set-up it drops every capability but
// the few that starting a confined QEMU needs, from the bounding set too.
#pragma once

#include <sys/capability.h>

#include <span>
#include <string>
#include <string_view>

#include <sandbox/result.h>
#include "common/process.h"

namespace sandbox::daemon {

struct KeptCapability {
  cap_value_t cap;
  std::string_view name;
  std::string_view reason;
};

// The list the README documents, one reason per capability.
std::span<const KeptCapability> kept_capabilities();

// Drops all other capabilities from the permitted, effective, inheritable,
// ambient and bounding sets, and locks SECBIT_NOROOT so that no program the
// daemon starts as uid 0 regains them. Must run while the process has a
// single thread (capability sets are per thread).
Result<void> drop_capabilities();

// uid, gid and supplementary groups of a user, for SpawnOptions::user.
Result<SpawnOptions::User> lookup_user(const std::string& name);
// gid of a group by name.
Result<gid_t> lookup_group(const std::string& name);

}  // namespace sandbox::daemon
