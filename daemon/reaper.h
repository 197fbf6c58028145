// QEMU processes on their way out. A VM's teardown sends SIGKILL and hands
// its process here instead of waiting: the kernel takes from milliseconds
// to tens of milliseconds to free a guest's memory, and the event loop
// serves everyone else meanwhile. The process is reaped once its pidfd
// says it has exited, then its cgroup is removed (retried on a timer while
// the kernel still counts tasks in it), and last its record (a daemon that
// crashes before that leaves the record, and start-up recovery kills what
// it names).
#pragma once

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>

#include "daemon/cgroups.h"
#include "daemon/launcher.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

class Reaper {
 public:
  // `cgroups` may be null (no per-VM cgroups).
  Reaper(uv_loop_t* loop, const Cgroups* cgroups) : loop_(loop), cgroups_(cgroups) {}
  // What is still here is killed and reaped now, waiting. The daemon runs
  // its loop dry before this, so nothing is left by then.
  ~Reaper();
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  // Kills `qemu` now; reaps it and removes its cgroup and record later.
  void reap(LaunchedQemu qemu);
  // Processes killed and not yet gone with their cgroup and record.
  size_t dying() const { return dying_.size(); }

 private:
  struct Dying {
    Reaper* reaper = nullptr;
    uint64_t id = 0;
    // Before the handles: members go in reverse order, and the poll must be
    // closed before the pidfd it watches.
    LaunchedQemu qemu;
    UvHandle<uv_poll_t> exit;
    UvHandle<uv_timer_t> timer;  // "still there" warning, then cgroup retries
    int attempts = 0;
  };
  void exited(uint64_t id);
  void remove_cgroup(uint64_t id);
  // The process, its cgroup and its record, all now.
  void finish_now(LaunchedQemu& qemu) const;

  uv_loop_t* loop_;
  const Cgroups* cgroups_;
  std::map<uint64_t, std::unique_ptr<Dying>> dying_;
  uint64_t next_id_ = 1;
};

}  // namespace sandbox::daemon
