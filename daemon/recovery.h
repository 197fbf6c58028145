// Start-up recovery: what a daemon that died without cleaning up (kill -9,
// a crash, power loss) left behind is found under its state directory and
// its cgroup subtree, and removed before the new daemon serves anyone.
// VmRecord is the other half: the one place a live QEMU is written down.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include <sandbox/result.h>

#include "daemon/cgroups.h"

namespace sandbox::daemon {

// "<dir>/<name>" holding "pid start-time" while its QEMU lives; removed
// with the object. Written with a temp file and a rename: a reader never
// sees half a record.
class VmRecord {
 public:
  static Result<VmRecord> write(const std::string& dir, const std::string& name, pid_t pid);
  VmRecord(VmRecord&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  VmRecord& operator=(VmRecord&& other) noexcept;
  VmRecord(const VmRecord&) = delete;
  VmRecord& operator=(const VmRecord&) = delete;
  ~VmRecord();

 private:
  explicit VmRecord(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

struct RecoveryReport {
  std::vector<std::string> killed;   // QEMU processes still running, "name (pid N)"
  std::vector<std::string> records;  // VM records removed
  std::vector<std::string> cgroups;  // VM cgroups removed
};

// `records_dir` holds one record per VM the previous daemon started. A
// process is killed only if both pid and start time still match (a reused
// pid is left alone); then its record and cgroup go.
RecoveryReport recover_leftovers(const std::string& records_dir, const Cgroups& cgroups);

}  // namespace sandbox::daemon
