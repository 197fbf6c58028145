// One exec at a time: user code as the unprivileged user, output streamed,
// the whole process tree killed at the deadline or when the main process ends.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <linux/filter.h>

#include "common/protocol.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace sandbox::agent {


class Execution {
 public:
  using Clock = std::chrono::steady_clock;

  // Forks the user process; `tree` is the cgroup directory that will hold
  // the whole process tree, or empty to fall back to the process group.
  // `filter` is the seccomp program installed in the child before exec.
  static Result<std::unique_ptr<Execution>> start(const proto::Exec& exec, const std::string& tree,
                                                  const std::vector<sock_filter>& filter);
  ~Execution();

  uint64_t id() const { return id_; }
  int stdout_fd() const { return out_.get(); }
  int stderr_fd() const { return err_.get(); }
  int timer_fd() const { return timer_.get(); }
  pid_t pid() const { return pid_; }

  // Reads what is available on a pipe and passes on what fits the stream's
  // limit; returns false at EOF (and closes it).
  bool drain(int fd, const std::function<void(proto::Stream, std::string_view)>& sink);
  // The deadline or the grace period expired.
  void on_timer();
  // The main process was reaped with wait status `status`.
  void on_main_exit(int status);
  // Main process gone and both pipes at EOF.
  bool finished() const { return exit_status_.has_value() && !out_ && !err_; }
  proto::ExecDone result() const;

 private:
  Execution() = default;
  void signal_tree(int sig);

  uint64_t id_ = 0;
  pid_t pid_ = -1;
  std::string tree_;
  unique_fd out_, err_, timer_;
  Clock::time_point started_;
  Clock::time_point ended_;
  std::optional<int> exit_status_;
  bool timed_out_ = false;
  bool term_sent_ = false;
  std::chrono::milliseconds grace_{0};
  uint64_t limit_[2] = {0, 0};  // per stream: stdout, stderr
  uint64_t sent_[2] = {0, 0};
  bool truncated_[2] = {false, false};
};

// Reaps every child that has exited; reports the main process of `exec`.
void reap_children(Execution* exec);

}  // namespace sandbox::agent
