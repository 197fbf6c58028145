#include "daemon/recovery.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "common/unique_fd.h"
#include "daemon/process.h"

namespace sandbox::daemon {

RecoveryReport recover_leftovers(const std::string& records_dir, const Cgroups& cgroups) {
  RecoveryReport report;
  std::vector<std::string> names;
  if (DIR* d = ::opendir(records_dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (e->d_type == DT_REG && e->d_name[0] != '.') names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string path = records_dir + "/" + name;
    std::ifstream in(path);
    long pid = 0;
    std::string start;
    if (in >> pid >> start && pid > 1 && process_start_time(static_cast<pid_t>(pid)) == start) {
      // A pidfd pins the process: the kill cannot hit a pid reused since.
      unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0)));
      if (pidfd && process_start_time(static_cast<pid_t>(pid)) == start &&
          ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) == 0) {
        // Not our child: its pidfd turns readable when it has exited.
        pollfd p{pidfd.get(), POLLIN, 0};
        ::poll(&p, 1, 5'000);
        report.killed.push_back(name + " (pid " + std::to_string(pid) + ")");
      }
    }
    ::unlink(path.c_str());
    report.records.push_back(name);
  }
  report.cgroups = cgroups.recover();
  return report;
}

}  // namespace sandbox::daemon
