// One exec at a time: user code as the unprivileged user, output streamed,
// the whole process tree killed at the deadline or when the main process ends.
//
// An execution is spawned first and started later: the interpreter comes up
// and blocks on a "go" pipe (fd 3); go() writes the code file and releases
// it. A warm VM spawns before any request exists, so a run pays only for
// the code itself; a cold one spawns and goes at once.
//
// Or the execution becomes a session (start_session()): the interpreter
// stays, fd 3 carries one line per cell and fd 4 returns each cell's status.
// Every cell's processes go to a cgroup of their own under the tree, so a
// timeout kills that cell's processes and interrupts (SIGINT) the
// interpreter, while background processes of earlier cells live on.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace sandbox::agent {

// Output of a session's background processes between cells, kept per
// stream for the next cell.
inline constexpr uint64_t kIdleOutputBytes = 64 << 10;

class Execution {
 public:
  using Clock = std::chrono::steady_clock;

  // Forks the interpreter for `language` with `env` added to the base
  // environment; it waits for go(). `tree` is the cgroup directory that will
  // hold the whole process tree, or empty to fall back to the process group;
  // `filter` is the seccomp program installed in the child before exec.
  static Result<std::unique_ptr<Execution>> spawn(proto::Language language, const proto::EnvList& env,
                                                  const std::string& tree, const std::vector<sock_filter>& filter);
  ~Execution();

  proto::Language language() const { return language_; }
  bool alive() const { return !exit_status_.has_value(); }
  // Writes the code, applies the exec's limits, releases the interpreter and
  // arms the deadline.
  Result<void> go(const proto::Exec& exec);
  bool started() const { return started_; }

  // Session mode.
  Result<void> start_session();
  bool in_session() const { return session_; }
  // Writes the cell's code and runs it in the interpreter, under the exec's
  // limits and deadline.
  Result<void> run_cell(const proto::Exec& exec);
  bool cell_active() const { return cell_active_; }
  int report_fd() const { return report_.get(); }
  // Reads the interpreter's status line(s) from fd 4; false once the pipe
  // is at EOF (and closed).
  bool on_report();
  // The running cell is over: status reported, or the interpreter died and
  // its pipes are closed.
  bool cell_finished() const {
    return cell_active_ && (cell_status_.has_value() || (exit_status_.has_value() && !out_ && !err_));
  }
  // The cell's result; the execution is ready for the next cell (unless the
  // interpreter died: then alive() is false and state_lost is set).
  proto::ExecDone end_cell();

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
  // Whether output now belongs to a request (a cell or a one-shot run).
  bool collecting() const { return session_ ? cell_active_ : true; }
  proto::ExecDone result() const;

 private:
  Execution() = default;
  void signal_tree(int sig);

  proto::Language language_ = proto::Language::python;
  uint64_t id_ = 0;
  pid_t pid_ = -1;
  std::string tree_;
  unique_fd out_, err_, timer_, go_, report_;
  bool started_ = false;
  Clock::time_point started_at_;
  Clock::time_point ended_;
  std::optional<int> exit_status_;
  bool timed_out_ = false;
  bool term_sent_ = false;
  std::chrono::milliseconds grace_{0};
  uint64_t limit_[2] = {0, 0};  // per stream: stdout, stderr
  uint64_t sent_[2] = {0, 0};
  bool truncated_[2] = {false, false};
  // Session state.
  bool session_ = false;
  bool cell_active_ = false;
  uint64_t cells_ = 0;
  std::string cell_tree_;  // cgroup of the running cell's processes
  std::string report_buf_;
  std::optional<int> cell_status_;
};

// Reaps every child that has exited and tells the execution it belongs to.
void reap_children(std::initializer_list<Execution*> executions);

}  // namespace sandbox::agent
