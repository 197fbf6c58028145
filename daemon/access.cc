#include "daemon/access.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <string>

namespace sandbox::daemon {

std::vector<gid_t> groups_of(uid_t uid, std::optional<gid_t> kernel_gid) {
  std::vector<gid_t> groups;
  if (kernel_gid) groups.push_back(*kernel_gid);
  passwd pw{}, *found = nullptr;
  std::vector<char> buf(16 << 10);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return groups;
  int n = 64;
  std::vector<gid_t> list(static_cast<size_t>(n));
  if (::getgrouplist(pw.pw_name, pw.pw_gid, list.data(), &n) < 0) {
    list.resize(static_cast<size_t>(n));
    if (::getgrouplist(pw.pw_name, pw.pw_gid, list.data(), &n) < 0) n = 0;
  }
  list.resize(static_cast<size_t>(std::max(n, 0)));
  groups.insert(groups.end(), list.begin(), list.end());
  return groups;
}

bool is_operator(const AccessPolicy& policy, uid_t uid) { return uid == 0 || uid == policy.daemon_uid; }

bool peer_allowed(const AccessPolicy& policy, uid_t uid, const std::vector<gid_t>& groups) {
  if (is_operator(policy, uid)) return true;
  if (std::find(policy.allowed_uids.begin(), policy.allowed_uids.end(), uid) != policy.allowed_uids.end()) return true;
  for (gid_t g : groups)
    if (std::find(policy.allowed_gids.begin(), policy.allowed_gids.end(), g) != policy.allowed_gids.end()) return true;
  return false;
}

}  // namespace sandbox::daemon
