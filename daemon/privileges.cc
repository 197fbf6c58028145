#include "daemon/privileges.h"

#include <grp.h>
#include <linux/securebits.h>
#include <pwd.h>
#include <sys/prctl.h>

#include <fstream>
#include <memory>
#include <vector>

namespace sandbox::daemon {
namespace {

constexpr KeptCapability kKept[] = {
    {CAP_SETUID, "CAP_SETUID", "each QEMU is started as the qemu-vm user; a Unix-socket port is made as its owner (setfsuid)"},
    {CAP_SETGID, "CAP_SETGID", "each QEMU gets qemu-vm's group and supplementary groups (kvm)"},
    {CAP_SYS_ADMIN, "CAP_SYS_ADMIN",
     "each QEMU is cloned into fresh mount, PID, IPC, UTS and network namespaces"},
    {CAP_KILL, "CAP_KILL", "QEMU runs as another user: stopping it, and leftovers at start-up, needs it"},
};

struct CapDeleter {
  void operator()(cap_t c) const { cap_free(c); }
};

int thread_count() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("Threads:")) return std::stoi(line.substr(8));
  return -1;
}

}  // namespace

std::span<const KeptCapability> kept_capabilities() { return kKept; }

Result<void> drop_capabilities() {
  if (int n = thread_count(); n != 1)
    return Error::make(ErrorCode::internal, "capabilities must be dropped with one thread running, not " + std::to_string(n));
  auto kept = [](cap_value_t c) {
    for (const auto& k : kKept)
      if (k.cap == c) return true;
    return false;
  };
  // The bounding set first: dropping from it needs CAP_SETPCAP, dropped below.
  for (cap_value_t c = 0; c < static_cast<cap_value_t>(cap_max_bits()); ++c)
    if (!kept(c) && cap_drop_bound(c) != 0 && errno != EINVAL) return Error::sys("dropping from the bounding set");
  if (::prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 0, 0) != 0) return Error::sys("PR_SET_SECUREBITS");
  std::unique_ptr<std::remove_pointer_t<cap_t>, CapDeleter> caps(cap_init());
  if (!caps) return Error::sys("cap_init");
  std::vector<cap_value_t> list;
  for (const auto& k : kKept) list.push_back(k.cap);
  if (cap_set_flag(caps.get(), CAP_PERMITTED, static_cast<int>(list.size()), list.data(), CAP_SET) != 0 ||
      cap_set_flag(caps.get(), CAP_EFFECTIVE, static_cast<int>(list.size()), list.data(), CAP_SET) != 0)
    return Error::sys("cap_set_flag");
  if (cap_set_proc(caps.get()) != 0) return Error::sys("cap_set_proc");
  if (cap_reset_ambient() != 0 && errno != EINVAL) return Error::sys("cap_reset_ambient");
  return ok();
}

Result<SpawnOptions::User> lookup_user(const std::string& name) {
  std::vector<char> buf(16384);
  passwd pw{}, *found = nullptr;
  if (int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found); rc != 0 || !found)
    return Error::make(ErrorCode::not_found, "no user '" + name + "' (sysusers.d creates it: systemd-sysusers)");
  SpawnOptions::User u{pw.pw_uid, pw.pw_gid, {}};
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  while (::getgrouplist(name.c_str(), pw.pw_gid, groups.data(), &n) < 0) groups.resize(static_cast<size_t>(n));
  groups.resize(static_cast<size_t>(n));
  u.groups = std::move(groups);
  if (u.uid == 0) return Error::make(ErrorCode::invalid_argument, "user '" + name + "' is root");
  return u;
}

Result<gid_t> lookup_group(const std::string& name) {
  std::vector<char> buf(16384);
  group gr{}, *found = nullptr;
  if (int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found); rc != 0 || !found)
    return Error::make(ErrorCode::not_found, "no group '" + name + "'");
  return gr.gr_gid;
}

}  // namespace sandbox::daemon
