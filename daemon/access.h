// Who may use sandboxd, the same on every transport: root and the daemon's
// own uid always; else a listed uid, or a member of a listed group. Group
// membership comes from the uid's entries in the user database (and the
// peer's kernel-reported gid on the socket), never from what a process
// claims about itself.
#pragma once

#include <sys/types.h>

#include <optional>
#include <vector>

namespace sandbox::daemon {

struct AccessPolicy {
  std::vector<uid_t> allowed_uids;
  std::vector<gid_t> allowed_gids;
  uid_t daemon_uid = 0;
};

// `groups`: the peer's, from groups_of().
bool peer_allowed(const AccessPolicy& policy, uid_t uid, const std::vector<gid_t>& groups);
// Operators may do what slows everyone down (empty the snapshot cache).
bool is_operator(const AccessPolicy& policy, uid_t uid);
// The uid's primary and supplementary groups from the user database, and
// `kernel_gid`: the peer's group as the kernel reports it (SO_PEERCRED).
std::vector<gid_t> groups_of(uid_t uid, std::optional<gid_t> kernel_gid);

}  // namespace sandbox::daemon
