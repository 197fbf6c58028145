// One exec at a time: user code as the unprivileged user, output streamed,
// the whole process tree killed at the deadline or when the main process ends.
//
// An execution is spawned first and started later: the interpreter comes up,
// says "ready" on fd 4 and blocks on a "go" pipe (fd 3); go() writes the code
// file and releases it. A warm VM spawns before any request exists, so a run
// pays only for the code itself.
//
// The code's clock (its timeout, its execution time) starts when both have
// happened: the interpreter is ready and has the code. Until then the
// interpreter's start-up is bounded on its own (the exec's
// startup_timeout_ms) and reported as startup_ms, so a slow host or a cold
// interpreter never eats the caller's budget.
//
// Or the execution becomes a session (start_session()): the interpreter
// sets up its loop and says so ("s" on fd 4; cells are ready to run from
// then), fd 3 carries one line per cell and fd 4 returns each cell's status.
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

#include <sandbox/result.h>

#include "common/process.h"
#include "common/protocol.h"
#include "common/unique_fd.h"

namespace sandbox::agent {

// Output of a session's background processes between cells, kept per
// stream for the next cell.
inline constexpr uint64_t kIdleOutputBytes = 64 << 10;

class Execution {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts the interpreter for `language` with `env` added to the base
  // environment; it waits for go(). `tree` is the cgroup directory that will
  // hold the whole process tree, or empty to fall back to the process group;
  // `filter` is the seccomp program installed in the child before exec.
  static Result<std::unique_ptr<Execution>> spawn(Language language, const EnvList& env, const std::string& tree,
                                                  const std::vector<sock_filter>& filter);
  ~Execution();

  Language language() const { return language_; }
  bool alive() const { return !exit_status_.has_value(); }
  // Writes the code and releases the interpreter; the clock starts once it
  // is ready (at once if it already is).
  Result<void> go(const proto::Exec& exec);
  bool started() const { return started_; }

  // Session mode.
  Result<void> start_session();
  bool in_session() const { return session_; }
  // Writes the cell's code and runs it in the interpreter, under the exec's
  // limits and deadline.
  Result<void> run_cell(const proto::Exec& exec);
  bool cell_active() const { return cell_active_; }
  // The running cell is over: status reported, or the interpreter died and
  // its pipes are closed.
  bool cell_finished() const {
    return cell_active_ && (cell_status_.has_value() || (exit_status_.has_value() && !out_ && !err_));
  }
  // The cell's result; the execution is ready for the next cell (unless the
  // interpreter died: then alive() is false and state_lost is set).
  proto::ExecDone end_cell();

  // Python only, before go(): a rehearsal of a run with our own code (a
  // pool VM's TCG warm-up). It is handed over as go() hands over a run, the
  // pids limit set to exec.pids_max (or rewritten as it stands if 0); the
  // waiting interpreter runs it in a child of its own, whose output nobody
  // reads, and stays as it was. Done once that child is gone; an error if
  // that did not happen within `bound`.
  Result<void> warm(const proto::Exec& exec, std::chrono::milliseconds bound);

  // Reads the interpreter's lines on fd 4 (ready, then cell statuses);
  // false once the pipe is at EOF (and closed).
  bool on_report();
  // Waits at most `bound` for a spawned interpreter to say it is ready;
  // false if it did not (still starting, or dead).
  bool wait_ready(std::chrono::milliseconds bound);
  // Stops the exec as at its timeout (interrupt or SIGTERM, grace, kill),
  // without calling it a timeout: its caller went away.
  void cancel();

  uint64_t id() const { return id_; }
  int stdout_fd() const { return out_.get(); }
  int stderr_fd() const { return err_.get(); }
  int report_fd() const { return report_.get(); }
  int timer_fd() const { return timer_.get(); }
  pid_t pid() const { return process_.pid(); }

  // Reads what is available on a pipe and passes on what fits the stream's
  // limit; returns false at EOF (and closes it).
  bool drain(int fd, const std::function<void(Stream, std::string_view)>& sink);
  // The start-up bound, the deadline or the grace period expired.
  void on_timer();
  // Reaps the main process if it has exited.
  void on_exit();
  // Main process gone and both pipes at EOF; or a one-shot interpreter
  // reported its exit status (all an exit does was done, output flushed)
  // and what it wrote has been read: its teardown need not be waited for.
  bool finished() const { return (exit_status_.has_value() && !out_ && !err_) || reported_status_.has_value(); }
  bool reported() const { return reported_status_.has_value(); }
  // Kills what is left of the process tree (after a reported end).
  void end_tree();
  // Reads both pipes until they have nothing more right now.
  void drain_available(const std::function<void(Stream, std::string_view)>& sink);
  // The interpreter never became ready within its start-up bound.
  bool startup_failed() const { return startup_failed_; }
  std::string startup_error() const;
  proto::ExecDone result() const;

 private:
  Execution() = default;
  void signal_tree(int sig);
  // Writes what the interpreter reads at its hand-over: the code to
  // `path`, the variables it sets itself (true if any), and `pids_max`
  // unless empty.
  Result<bool> stage(const char* path, const proto::Exec& exec, std::string_view pids_max);
  // Reads fd 4 until `flag` is set by a line, for at most `bound`.
  bool await_report(const bool& flag, std::chrono::milliseconds bound);
  // The interpreter is ready and has the code: the timeout runs from now.
  void start_clock();
  // Waits for readiness (bounded by the start-up limit) or starts the clock.
  void arm_after_handover(const proto::Exec& exec);
  // Ready to be given code: a session's cells wait for its loop, whose
  // set-up an interrupt would otherwise kill.
  bool can_run() const { return session_ ? session_ready_ : ready_; }
  void interrupt();
  void reaped(int status);

  Language language_ = Language::python;
  uint64_t id_ = 0;
  Process process_;
  std::string tree_;
  unique_fd out_, err_, timer_, go_, report_;
  bool started_ = false;
  bool ready_ = false;          // "r": the interpreter is up
  bool session_ready_ = false;  // "s": its session loop is set up
  bool warmed_ = false;         // "w N": a warm-up child ran and is gone
  bool clock_running_ = false;
  bool startup_failed_ = false;
  std::chrono::milliseconds timeout_{0}, startup_timeout_{0};
  Clock::time_point handed_at_, ready_at_, clock_start_, ended_;
  std::optional<int> exit_status_;
  std::optional<int> reported_status_;  // "x N" from a one-shot interpreter
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

// As PID 1: reaps every exited child; an execution's own are reaped
// through its handle, so it learns its exit status.
void reap_children(std::initializer_list<Execution*> executions);

}  // namespace sandbox::agent
