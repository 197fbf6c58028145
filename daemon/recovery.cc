#include "daemon/recovery.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "common/io.h"
#include "common/process.h"
#include "common/unique_fd.h"

namespace sandbox::daemon {

Result<VmRecord> VmRecord::write(const std::string& dir, const std::string& name, pid_t pid) {
  std::string path = dir + "/" + name, temp = dir + "/." + name;
  {
    unique_fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return Error::sys("open", temp);
    if (auto r = write_all(fd.get(), std::to_string(pid) + " " + process_start_time(pid) + "\n", temp); !r)
      return std::move(r).error();
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    auto e = Error::sys("rename", path);
    ::unlink(temp.c_str());
    return e;
  }
  return VmRecord(path);
}

VmRecord& VmRecord::operator=(VmRecord&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) ::unlink(path_.c_str());
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

VmRecord::~VmRecord() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

RecoveryReport recover_leftovers(const std::string& records_dir, const Cgroups& cgroups) {
  RecoveryReport report;
  std::vector<std::string> names;
  if (auto d = Dir::open(records_dir))
    while (const dirent* e = d->next())
      if (e->d_type == DT_REG) names.emplace_back(e->d_name);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string path = records_dir + "/" + name;
    if (name.starts_with(".")) {  // a record never completed
      ::unlink(path.c_str());
      continue;
    }
    auto text = read_file(path, 256);
    long pid = 0;
    char start[64] = {};
    if (text && std::sscanf(text->c_str(), "%ld %63s", &pid, start) == 2 && pid > 1 &&
        process_start_time(static_cast<pid_t>(pid)) == start) {
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
