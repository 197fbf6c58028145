// A child process owned through a pidfd: the handle's destructor kills and
// reaps it, so no child (a QEMU, a guest interpreter, a test's daemon) can
// outlive the object that started it. Spawning is one clone3 with every
// step of the child's set-up listed in SpawnOptions.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sandbox/result.h>
#include "common/unique_fd.h"

namespace sandbox {

struct SpawnOptions {
  std::vector<std::string> argv;
  // Descriptors the child gets, as (number in the child, descriptor here).
  // 0, 1 and 2 default to /dev/null when not listed. Everything else is closed.
  std::vector<std::pair<int, int>> fds;
  // The child dies with the daemon (PR_SET_PDEATHSIG), even after a crash.
  bool die_with_parent = true;
  // Confinement applied in the child before exec: no_new_privs, and (when
  // the daemon is root) fresh mount, PID, IPC, UTS and network namespaces;
  // a VM needs no host network and sees no host process.
  bool confine = false;
  // Switch to this user before exec. From root this leaves the child with
  // no capabilities at all (permitted, effective and ambient are cleared).
  struct User {
    uid_t uid;
    gid_t gid;
    std::vector<gid_t> groups;
  };
  std::optional<User> user;
  // A cgroup v2 directory: the child is created in it (CLONE_INTO_CGROUP),
  // so it never runs a single instruction outside its limits.
  int cgroup_fd = -1;
  // A seccomp program installed as the last step before exec; it must
  // allow execve. Built before the fork: the child may not allocate.
  const std::vector<sock_filter>* seccomp = nullptr;
  // The child's whole environment ("NAME=value"); unset keeps ours.
  std::optional<std::vector<std::string>> env;
  // Working directory of the child; empty keeps ours.
  std::string cwd;
  // no_new_privs without the namespaces of `confine`.
  bool no_new_privs = false;
  // SCHED_BATCH, inherited by its children: a wake-up of theirs never
  // preempts a running task (the tick still may).
  bool batch_scheduling = false;
};

class Process {
 public:
  static Result<Process> spawn(const SpawnOptions& options);

  Process() = default;
  Process(Process&&) noexcept = default;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  // Readable (POLLIN) once the process has exited.
  int pidfd() const { return pidfd_.get(); }
  bool running() const { return pidfd_ && !status_; }
  Result<void> signal(int sig);
  // Reaps the process if it has exited; returns its wait status.
  std::optional<int> try_wait();
  // Blocks until the process exits on its own; returns its wait status.
  int wait();
  // SIGKILL and reap; idempotent.
  void kill_and_wait();

 private:
  pid_t pid_ = -1;
  unique_fd pidfd_;
  std::optional<int> status_;
};

// Signals a process that is not a child of ours (one a cgroup lists, say),
// through a pidfd opened on it; false if it is gone.
bool signal_process(pid_t pid, int sig);

// Resource use of a live process from /proc (the fallback when no cgroup
// accounts for it): CPU time of all its threads and its peak resident set.
struct ProcessUsage {
  uint64_t cpu_ms = 0;
  uint64_t peak_rss_kb = 0;
};
std::optional<ProcessUsage> read_process_usage(pid_t pid);

// Field 22 of /proc/PID/stat (start time in clock ticks since boot): with
// the pid it names one process for good. Empty if there is no such process.
std::string process_start_time(pid_t pid);

// "exited with status 1" / "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

}  // namespace sandbox
