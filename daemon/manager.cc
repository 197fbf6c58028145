#include "daemon/manager.h"

#include <sys/random.h>

#include <algorithm>

#include "common/files.h"
#include "common/limits.h"
#include "common/validate.h"
#include "daemon/log.h"
#include "daemon/process.h"
#include "daemon/snapshots.h"

#include <fcntl.h>
#include "daemon/vm.h"

namespace sandbox::daemon {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t ms_between(Clock::time_point a, Clock::time_point b) {
  if (b < a || a == Clock::time_point{}) return 0;
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
}

// After a pool boot fails, refills wait this long: broken images or a
// missing QEMU must not turn into a busy loop of boots.
constexpr std::chrono::milliseconds kRefillBackoff{5'000};

size_t index_of(proto::Language l) { return static_cast<size_t>(l); }

// Requests waiting on one session: a client may pipeline, not flood.
constexpr size_t kMaxSessionJobs = 16;
// Closed session ids remembered for a clear session_closed.
constexpr size_t kClosedSessionsKept = 1024;

}  // namespace

// One VM lease: a run (one exec, then the VM goes) or a session (jobs, one
// at a time in arrival order, until it is closed, idles out or its VM dies).
// States and what moves them:
//   queued   -> booting (capacity or a warm VM)     | finished (deadline, cancel)
//   booting  -> busy (a run) | idle (a session)     | finished (boot failed)
//   idle     -> busy (next job)                     | finished (close, idle timeout, VM died)
//   busy     -> idle (job done, session)            | finished (run done, VM died, deadline)
class Manager::Run {
 public:
  enum class State { queued, booting, idle, busy, finished };

  struct Spec {
    proto::Language language = proto::Language::python;
    proto::EnvList env;
    uint32_t timeout_ms = 0;  // each exec's default
    uint32_t memory_mb = 0;
    uint32_t idle_timeout_ms = 0;
    std::string session;  // empty for a run
  };

  // `request_id` and `observer` are the creator's: a run's result, or the
  // session's creation reply, goes there.
  Run(Manager* m, RunId id, Caller caller, Spec spec, uint64_t request_id, std::weak_ptr<RunObserver> obs)
      : mgr_(m), id_(id), caller_(caller), spec_(std::move(spec)), request_id_(request_id), observer_(std::move(obs)),
        accepted_(Clock::now()), created_wall_(wall_ms()) {
    auto make = [&] { return UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(m->loop_, t); }); };
    timer_ = make();
    idle_ = make();
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t); run && run->state_ == State::queued)
            run->fail(Error::make(ErrorCode::capacity, "no VM slot became free within the queue deadline (" +
                                                           std::to_string(run->mgr_->options_.queue_timeout.count()) +
                                                           " ms); try again later"));
        },
        static_cast<uint64_t>(m->options_.queue_timeout.count()), 0);
  }
  ~Run() {
    if (vm_) mgr_->bury(std::move(vm_));
  }

  State state() const { return state_; }
  const Caller& caller() const { return caller_; }
  bool is_session() const { return !spec_.session.empty(); }
  const std::string& session() const { return spec_.session; }

  // Appends a job. A run gets its one exec here, before it is queued.
  void enqueue(uint64_t request_id, proto::Message request, std::weak_ptr<RunObserver> observer) {
    jobs_.push_back(Job{request_id, std::move(request), std::move(observer), Clock::now()});
    if (state_ == State::idle) mgr_->schedule_sweep();  // started from the loop, never inside the caller
  }
  size_t pending_jobs() const { return jobs_.size(); }

  proto::SessionInfo info() const {
    return {spec_.session, spec_.language, spec_.memory_mb, spec_.idle_timeout_ms, exec_count_, created_wall_,
            last_activity_wall_ ? last_activity_wall_ : created_wall_, vm_start_};
  }

  // Starts on a warm VM or a fresh boot; false when there is no room yet.
  bool try_start() {
    auto lang = index_of(spec_.language);
    bool pool_eligible = mgr_->options_.pool_size[lang] > 0 && spec_.memory_mb == mgr_->options_.pool_memory_mb;
    if (pool_eligible) {
      if (auto vm = mgr_->take_warm(spec_.language)) {
        ++mgr_->pools_[lang].hits;
        warm_ = true;
        vm_start_ = "pool";
        adopt(std::move(vm));
        return true;
      }
    }
    if (!mgr_->has_capacity() && !mgr_->evict_idle()) return false;
    if (pool_eligible) ++mgr_->pools_[lang].misses;
    uv_timer_stop(timer_.get());
    state_ = State::booting;
    if (auto r = boot(); !r) fail(std::move(r).error());
    return true;
  }

  // Starts the next job if the VM is free.
  void pump() {
    if (state_ != State::idle) return;
    if (mgr_->draining_ && is_session()) return close("sandboxd is shutting down");
    if (jobs_.empty()) return;
    current_ = std::move(jobs_.front());
    jobs_.pop_front();
    uv_timer_stop(idle_.get());
    state_ = State::busy;
    if (auto* exec = std::get_if<proto::SessionExec>(&current_->request)) return start_exec(exec->code, exec->timeout_ms);
    if (auto* run = std::get_if<proto::RunRequest>(&current_->request)) return start_exec(run->code, run->timeout_ms);
    if (std::holds_alternative<proto::SessionClose>(current_->request)) {
      auto obs = current_->observer.lock();
      uint64_t rid = current_->request_id;
      close("closed by its owner");
      if (obs) obs->on_reply(proto::Ack{rid});
      return;
    }
    start_file_job();
  }

  void cancel() {
    if (state_ == State::finished) return;
    log_info(std::string(is_session() ? "session " + spec_.session : "run " + std::to_string(id_)) +
             " cancelled: caller went away");
    end();
  }

  // Ends a session: its VM goes; pending jobs hear why.
  void close(const std::string& why) {
    if (state_ == State::finished) return;
    log_info("session " + spec_.session + " uid=" + std::to_string(caller_.uid) + " closed: " + why +
             " (" + std::to_string(exec_count_) + " execs)");
    closed_reason_ = why;
    end();
  }

  void fail(Error e) {
    if (state_ == State::finished) return;
    log_info(std::string(is_session() ? "session " + spec_.session : "run id=" + std::to_string(id_)) +
             " uid=" + std::to_string(caller_.uid) + " failed: " + e.describe().substr(0, 500));
    if (state_ == State::busy || state_ == State::idle) {
      // A session whose VM is gone: the job in progress hears why, the rest
      // hear that the session is closed.
      closed_reason_ = "its VM stopped (" + e.message.substr(0, 200) + ")";
      if (current_ && is_session()) {
        e.code = e.code == ErrorCode::timeout ? e.code : ErrorCode::session_closed;
        e.message = "the session's VM stopped: " + e.message;
      }
    }
    auto obs = current_ ? current_->observer.lock() : observer_.lock();
    uint64_t rid = current_ ? current_->request_id : request_id_;
    end();
    if (obs) obs->on_error(proto::ErrorReply{rid, e.code, e.message});
  }

  const std::string& closed_reason() const { return closed_reason_; }

 private:
  struct Job {
    uint64_t request_id = 0;
    proto::Message request;
    std::weak_ptr<RunObserver> observer;
    Clock::time_point accepted;
  };

  static uint64_t wall_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  }

  Vm::Events events() {
    Vm::Events ev;
    ev.ready = [this] { on_ready(); };
    ev.output = [this](proto::Output&& o) { on_output(std::move(o)); };
    ev.done = [this](proto::ExecDone&& d) { on_done(d); };
    ev.exec_error = [this](proto::ErrorReply&& e) { on_job_error(Error::make(e.code, "guest: " + e.message)); };
    ev.file = [this](proto::Message&& m) { on_file(std::move(m)); };
    ev.failed = [this](Error e) { on_vm_failed(std::move(e)); };
    return ev;
  }

  void adopt(std::unique_ptr<Vm> vm) {
    uv_timer_stop(timer_.get());
    vm_ = std::move(vm);
    vm_->set_events(events());
    spawned_ = ready_ = Clock::now();
    state_ = State::booting;
    on_ready();
  }

  Result<void> boot() {
    ++attempts_;
    VmSpec spec = mgr_->options_.vm;
    spec.memory_mb = spec_.memory_mb;
    // Without extra environment the interpreter can come up during boot.
    if (spec_.env.empty()) spec.prestart = spec_.language;
    std::string how;
    auto vm = mgr_->start_vm(spec, spec_.language, events(), &how);
    if (!vm) return std::move(vm).error();
    vm_ = std::move(*vm);
    if (vm_start_.empty()) vm_start_ = how;
    else if (how == "boot") vm_start_ = "boot (snapshot failed)";
    if (attempts_ == 1) spawned_ = Clock::now();
    return ok();
  }

  void on_ready() {
    if (state_ != State::booting) return;
    state_ = State::idle;
    if (ready_ == Clock::time_point{}) ready_ = Clock::now();
    if (is_session()) {
      log_info("session " + spec_.session + " uid=" + std::to_string(caller_.uid) + " language=" +
               std::string(proto::language_name(spec_.language)) + " opened (" + vm_start_ + ", " +
               std::to_string(ms_between(accepted_, ready_)) + " ms)");
      if (auto obs = observer_.lock()) obs->on_reply(proto::SessionList{request_id_, {info()}});
      arm_idle();
    }
    pump();
  }

  void arm_idle() {
    last_activity_wall_ = wall_ms();
    uv_timer_start(
        idle_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t); run && run->state_ == State::idle)
            run->close("idle for " + std::to_string(run->spec_.idle_timeout_ms / 1000) + " s");
        },
        spec_.idle_timeout_ms, 0);
  }

  void start_exec(const std::string& code, uint32_t timeout_ms) {
    const auto& o = mgr_->options_;
    if (timeout_ms == 0) timeout_ms = spec_.timeout_ms;
    stdout_.clear();
    stderr_.clear();
    stdout_truncated_ = stderr_truncated_ = false;
    proto::Exec exec{++job_seq_, spec_.language, code, spec_.env, timeout_ms, static_cast<uint32_t>(o.kill_grace.count()),
                     limits::kMaxStdoutBytes, limits::kMaxStderrBytes, o.pids_max, is_session()};
    if (auto r = vm_->exec(exec); !r) return fail(std::move(r).error());
    exec_sent_ = Clock::now();
    cpu_at_start_ = usage().cpu_ms;
    // The guest enforces the timeout; this catches a guest that cannot.
    auto deadline = std::chrono::milliseconds(timeout_ms) + o.kill_grace + o.kill_slack;
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t)) run->on_host_deadline();
        },
        static_cast<uint64_t>(deadline.count()), 0);
  }

  void start_file_job() {
    uint64_t seq = ++job_seq_;
    file_chunks_.clear();
    file_bytes_ = 0;
    std::vector<proto::Message> frames;
    if (auto* w = std::get_if<proto::FileWrite>(&current_->request)) {
      frames.push_back(proto::FileWrite{seq, "", w->path, w->size, w->executable, {}});
      for (auto& c : w->chunks) frames.push_back(proto::FileChunk{seq, std::move(c)});
      w->chunks.clear();
    } else if (auto* r = std::get_if<proto::FileRead>(&current_->request)) {
      frames.push_back(proto::FileRead{seq, "", r->path});
    } else if (auto* l = std::get_if<proto::FileListRequest>(&current_->request)) {
      frames.push_back(proto::FileListRequest{seq, "", l->path});
    } else {
      return on_job_error(Error::make(ErrorCode::internal, "unknown session job"));
    }
    if (auto r = vm_->file_request(seq, frames); !r) return fail(std::move(r).error());
    // Bounded like an exec: a guest that never answers loses its VM.
    auto deadline = std::chrono::milliseconds(limits::kMaxTimeoutMs);
    uv_timer_start(
        timer_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t))
            run->fail(Error::make(ErrorCode::timeout, "the guest did not complete a file transfer in time"));
        },
        static_cast<uint64_t>(deadline.count()), 0);
  }

  void on_file(proto::Message&& m) {
    if (state_ != State::busy || !current_) return;
    if (auto* chunk = std::get_if<proto::FileChunk>(&m)) {
      // The guest is not trusted with the size either.
      auto n = chunk_content_size(chunk->data);
      if (!n || file_bytes_ + *n > limits::kMaxFileBytes || file_chunks_.size() >= limits::kMaxFileChunks)
        return fail(Error::make(ErrorCode::communication, "the guest sent a malformed or oversized file"));
      file_bytes_ += *n;
      file_chunks_.push_back(std::move(chunk->data));
      return;
    }
    auto obs = current_->observer.lock();
    uint64_t rid = current_->request_id;
    proto::Message reply = proto::Ack{rid};
    if (auto* done = std::get_if<proto::FileDone>(&m)) {
      if (std::holds_alternative<proto::FileRead>(current_->request)) {
        if (done->size != file_bytes_)
          return fail(Error::make(ErrorCode::communication, "the guest sent a file whose size does not add up"));
        reply = proto::FileContent{rid, file_bytes_, std::move(file_chunks_)};
      } else {
        reply = proto::FileDone{rid, done->size};
      }
    } else if (auto* list = std::get_if<proto::FileList>(&m)) {
      list->id = rid;
      reply = std::move(*list);
    }
    file_chunks_.clear();
    job_finished();
    if (obs) obs->on_reply(std::move(reply));
  }

  void on_output(proto::Output&& o) {
    if (state_ != State::busy || !current_) return;
    bool is_out = o.stream == proto::Stream::out;
    std::string& buf = is_out ? stdout_ : stderr_;
    bool& truncated = is_out ? stdout_truncated_ : stderr_truncated_;
    size_t cap = is_out ? limits::kMaxStdoutBytes : limits::kMaxStderrBytes;
    if (buf.size() >= cap) {
      truncated = truncated || !o.data.empty();
      return;
    }
    std::string_view keep(o.data);
    if (buf.size() + keep.size() > cap) {
      keep = keep.substr(0, cap - buf.size());
      truncated = true;
    }
    buf.append(keep);
    if (auto obs = current_->observer.lock()) obs->on_output(current_->request_id, o.stream, keep);
  }

  void on_done(const proto::ExecDone& d) {
    if (state_ != State::busy || !current_) return;
    proto::RunResult r = base_result();
    r.exit_code = d.exit_code;
    r.signal = d.signal;
    r.timed_out = d.timed_out;
    r.execution_time_ms = d.duration_ms;
    r.stdout_truncated = r.stdout_truncated || d.stdout_truncated;
    r.stderr_truncated = r.stderr_truncated || d.stderr_truncated;
    r.state_lost = d.state_lost;
    succeed(std::move(r));
  }

  // The guest refused the job; a session stays usable, a run is over.
  void on_job_error(Error e) {
    if (state_ != State::busy || !current_) return;
    if (!is_session()) return fail(std::move(e));
    auto obs = current_->observer.lock();
    uint64_t rid = current_->request_id;
    job_finished();
    if (obs) obs->on_error(proto::ErrorReply{rid, e.code, e.message});
  }

  void on_host_deadline() {
    if (state_ != State::busy) return;
    proto::RunResult r = base_result();
    r.timed_out = true;
    r.signal = 9;
    r.exit_code = 128 + 9;
    r.execution_time_ms = ms_between(exec_sent_, Clock::now());
    r.state_lost = is_session();
    log_warning(std::string(is_session() ? "session " + spec_.session : "run " + std::to_string(id_)) +
                ": guest missed its deadline; VM killed");
    closed_reason_ = "its VM missed an exec deadline and was killed";
    auto obs = current_ ? current_->observer.lock() : nullptr;
    end();
    if (obs) obs->on_result(std::move(r));
  }

  void on_vm_failed(Error e) {
    if (state_ == State::finished) return;
    bool booting = state_ == State::booting;
    bool retryable = e.code == ErrorCode::timeout || e.code == ErrorCode::vm_boot_failed;
    if (booting && vm_ && vm_->restored()) {
      // A snapshot that cannot be restored is discarded; this run boots.
      mgr_->discard_snapshot(spec_.language, spec_.memory_mb, e.message.substr(0, 200));
      mgr_->bury(std::move(vm_));
      --attempts_;
      if (auto r = boot(); !r) fail(std::move(r).error());
      return;
    }
    if (booting && retryable && attempts_ <= mgr_->options_.boot_retries) {
      log_warning("run " + std::to_string(id_) + ": boot attempt " + std::to_string(attempts_) + " failed (" +
                  e.describe().substr(0, 200) + "); retrying");
      mgr_->bury(std::move(vm_));
      if (auto r = boot(); !r) fail(std::move(r).error());
      return;
    }
    if (booting && e.code == ErrorCode::timeout) e.code = ErrorCode::vm_boot_failed;
    if (state_ == State::idle) return close("its VM stopped (" + e.message.substr(0, 200) + ")");
    fail(std::move(e));
  }

  ProcessUsage usage() const {
    if (!vm_) return {};
    return vm_->usage();
  }

  proto::RunResult base_result() {
    auto now = Clock::now();
    proto::RunResult r;
    r.id = current_ ? current_->request_id : request_id_;
    r.stdout_data = std::move(stdout_);
    r.stderr_data = std::move(stderr_);
    r.stdout_truncated = stdout_truncated_;
    r.stderr_truncated = stderr_truncated_;
    // A session's later execs start on a running VM: no setup, no boot.
    bool first = exec_count_ == 0;
    r.timing.setup_ms = first ? ms_between(accepted_, spawned_) : 0;
    r.timing.boot_ms = first ? ms_between(spawned_, ready_) : 0;
    r.timing.execute_ms = ms_between(exec_sent_, now);
    r.timing.total_ms = ms_between(first ? accepted_ : current_->accepted, now);
    // Measured on the host, for the QEMU process while the code ran.
    auto u = usage();
    r.cpu_time_ms = u.cpu_ms > cpu_at_start_ ? u.cpu_ms - cpu_at_start_ : 0;
    r.memory_peak_mb = (u.peak_rss_kb + 1023) / 1024;
    r.warm_pool_hit = warm_;
    r.accelerator = std::string(accel_name(mgr_->options_.vm.accel));
    r.vm_start = vm_start_;
    return r;
  }

  void succeed(proto::RunResult r) {
    if (state_ == State::finished) return;
    log_info(std::string(is_session() ? "session " + spec_.session + " exec" : "run id=" + std::to_string(id_)) +
             " uid=" + std::to_string(caller_.uid) + " language=" + std::string(proto::language_name(spec_.language)) +
             " exit=" + std::to_string(r.exit_code) + " timed_out=" + (r.timed_out ? "1" : "0") +
             " warm=" + (warm_ ? "1" : "0") + " boot_ms=" + std::to_string(r.timing.boot_ms) +
             " total_ms=" + std::to_string(r.timing.total_ms) + " accel=" + r.accelerator);
    auto obs = current_ ? current_->observer.lock() : nullptr;
    ++exec_count_;
    if (is_session()) job_finished();
    else end();
    if (obs) obs->on_result(std::move(r));
  }

  // A session's job is over: the VM is free for the next.
  void job_finished() {
    uv_timer_stop(timer_.get());
    current_.reset();
    state_ = State::idle;
    arm_idle();
    mgr_->schedule_sweep();
  }

  void end() {
    state_ = State::finished;
    if (timer_) uv_timer_stop(timer_.get());
    if (idle_) uv_timer_stop(idle_.get());
    if (vm_) mgr_->bury(std::move(vm_));
    current_.reset();
    // A session's waiting jobs hear that there is no session any more (a
    // run's one job is the run: its caller hears from fail or succeed).
    auto waiting = std::exchange(jobs_, {});
    std::string why = closed_reason_.empty() ? "it was closed" : closed_reason_;
    if (is_session())
      for (auto& j : waiting)
        if (auto obs = j.observer.lock())
          obs->on_error(proto::ErrorReply{j.request_id, ErrorCode::session_closed, "the session closed: " + why});
    mgr_->finished(id_);
  }

  Manager* mgr_;
  RunId id_;
  Caller caller_;
  Spec spec_;
  uint64_t request_id_;
  std::weak_ptr<RunObserver> observer_;
  State state_ = State::queued;
  std::unique_ptr<Vm> vm_;
  UvHandle<uv_timer_t> timer_;  // queue deadline, then each job's host deadline
  UvHandle<uv_timer_t> idle_;   // a session's idle timeout
  std::deque<Job> jobs_;
  std::optional<Job> current_;
  uint64_t job_seq_ = 0;  // ids on the agent channel
  uint64_t exec_count_ = 0;
  std::string closed_reason_;
  uint32_t attempts_ = 0;
  bool warm_ = false;
  std::string vm_start_;
  std::string stdout_, stderr_;
  bool stdout_truncated_ = false, stderr_truncated_ = false;
  std::vector<std::string> file_chunks_;
  uint64_t file_bytes_ = 0;
  Clock::time_point accepted_, spawned_, ready_, exec_sent_;
  uint64_t created_wall_ = 0, last_activity_wall_ = 0;
  uint64_t cpu_at_start_ = 0;
};

Manager::Manager(uv_loop_t* loop, ManagerOptions options) : loop_(loop), options_(std::move(options)) {
  auto timer = [&] { return UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); }); };
  sweep_ = timer();
  health_ = timer();
  retry_refill_ = timer();
  drain_timer_ = timer();
}

Manager::~Manager() {
  cancel_all();
  for (auto& [key, t] : templates_) {
    t.vm.reset();
    options_.snapshots->abort(std::move(*t.pending));
  }
  templates_.clear();
  for (auto& pool : pools_) {
    pool.ready.clear();
    pool.booting.clear();
  }
  dead_runs_.clear();
  dead_vms_.clear();
}

void Manager::start() {
  auto interval = static_cast<uint64_t>(options_.pool_health_interval.count());
  uv_timer_start(
      health_.get(),
      [](uv_timer_t* t) {
        if (auto* m = owner_of<Manager>(t)) m->health_tick();
      },
      interval, interval);
  refill();
}

Result<Manager::RunId> Manager::run(const Caller& caller, proto::RunRequest request,
                                    std::weak_ptr<RunObserver> observer) {
  if (auto v = validate_run_request(request); !v) return std::move(v).error();
  if (draining_) return Error::make(ErrorCode::capacity, "sandboxd is shutting down");
  if (auto u = per_uid_.find(caller.uid); u != per_uid_.end() && u->second >= options_.max_runs_per_uid)
    return Error::make(ErrorCode::capacity, "uid " + std::to_string(caller.uid) + " already has " +
                                                std::to_string(u->second) + " runs in flight (the per-user limit)");
  RunId id = next_id_++;
  ++per_uid_[caller.uid];
  Run::Spec spec{request.language, request.env, request.timeout_ms, request.memory_mb, 0, ""};
  uint64_t request_id = request.id;
  auto run = std::make_unique<Run>(this, id, caller, std::move(spec), request_id, observer);
  run->enqueue(request_id, std::move(request), std::move(observer));
  runs_.emplace(id, std::move(run));
  queue_.push_back(id);
  // Admission happens on the next loop turn, never inside this call, so a
  // transport hears about the run only after it has recorded it.
  schedule_sweep();
  return id;
}

Result<Manager::RunId> Manager::create_session(const Caller& caller, proto::SessionCreate request,
                                               std::weak_ptr<RunObserver> observer) {
  // The same checks as a run, on everything but the code.
  proto::RunRequest as_run{request.id, request.language, "#", request.env, request.timeout_ms, request.memory_mb};
  if (auto v = validate_run_request(as_run); !v) return std::move(v).error();
  if (request.idle_timeout_ms == 0) request.idle_timeout_ms = options_.session_idle_timeout_ms;
  if (request.idle_timeout_ms < limits::kMinSessionIdleMs || request.idle_timeout_ms > limits::kMaxSessionIdleMs)
    return Error::make(ErrorCode::invalid_argument, "idle timeout " + std::to_string(request.idle_timeout_ms) +
                                                        " ms is outside " + std::to_string(limits::kMinSessionIdleMs) +
                                                        "-" + std::to_string(limits::kMaxSessionIdleMs) + " ms");
  if (draining_) return Error::make(ErrorCode::capacity, "sandboxd is shutting down");
  if (auto u = sessions_per_uid_.find(caller.uid);
      u != sessions_per_uid_.end() && u->second >= options_.max_sessions_per_uid)
    return Error::make(ErrorCode::capacity, "uid " + std::to_string(caller.uid) + " already has " +
                                                std::to_string(u->second) + " sessions open (the per-user limit)");
  // Unguessable, though ownership is what protects a session.
  unsigned char raw[12];
  if (::getrandom(raw, sizeof raw, 0) != sizeof raw) return Error::sys("getrandom");
  std::string sid = "s-";
  for (unsigned char c : raw) {
    static constexpr char kHex[] = "0123456789abcdef";
    sid += kHex[c >> 4];
    sid += kHex[c & 15];
  }
  RunId id = next_id_++;
  ++sessions_per_uid_[caller.uid];
  Run::Spec spec{request.language, std::move(request.env), request.timeout_ms, request.memory_mb,
                 request.idle_timeout_ms, sid};
  runs_.emplace(id, std::make_unique<Run>(this, id, caller, std::move(spec), request.id, std::move(observer)));
  sessions_.emplace(sid, id);
  queue_.push_back(id);
  schedule_sweep();
  return id;
}

Result<void> Manager::session_request(const Caller& caller, uint64_t request_id, proto::Message request,
                                      std::weak_ptr<RunObserver> observer) {
  std::string sid;
  std::visit(
      [&](const auto& m) {
        if constexpr (requires { m.session; }) sid = m.session;
      },
      request);
  auto not_found = Error::make(ErrorCode::not_found, "no session '" + sid.substr(0, 64) + "'");
  auto it = sessions_.find(sid);
  if (it == sessions_.end()) {
    if (auto c = closed_.find(sid); c != closed_.end() && c->second.uid == caller.uid)
      return Error::make(ErrorCode::session_closed, "session '" + sid + "' is closed: " + c->second.why);
    return not_found;
  }
  auto run = runs_.find(it->second);
  // Another user's session does not exist, as far as this caller can tell.
  if (run == runs_.end() || run->second->caller().uid != caller.uid) return not_found;
  if (auto* e = std::get_if<proto::SessionExec>(&request)) {
    if (e->code.empty()) return Error::make(ErrorCode::invalid_argument, "code is empty");
    if (e->timeout_ms != 0 && (e->timeout_ms < limits::kMinTimeoutMs || e->timeout_ms > limits::kMaxTimeoutMs))
      return Error::make(ErrorCode::invalid_argument, "timeout " + std::to_string(e->timeout_ms) + " ms is outside " +
                                                          std::to_string(limits::kMinTimeoutMs) + "-" +
                                                          std::to_string(limits::kMaxTimeoutMs) + " ms");
  } else if (auto* w = std::get_if<proto::FileWrite>(&request)) {
    if (auto v = validate_guest_path(w->path, false); !v) return std::move(v).error();
    if (auto v = check_chunks(w->chunks, w->size); !v) return std::move(v).error();
  } else if (auto* r = std::get_if<proto::FileRead>(&request)) {
    if (auto v = validate_guest_path(r->path, false); !v) return std::move(v).error();
  } else if (auto* l = std::get_if<proto::FileListRequest>(&request)) {
    if (auto v = validate_guest_path(l->path, true); !v) return std::move(v).error();
  } else if (!std::holds_alternative<proto::SessionClose>(request)) {
    return Error::make(ErrorCode::invalid_argument, "not a session request");
  }
  if (run->second->pending_jobs() >= kMaxSessionJobs)
    return Error::make(ErrorCode::capacity, "session '" + sid + "' already has " + std::to_string(kMaxSessionJobs) +
                                                " requests waiting");
  run->second->enqueue(request_id, std::move(request), std::move(observer));
  return ok();
}

std::vector<proto::SessionInfo> Manager::sessions(const Caller& caller) const {
  std::vector<proto::SessionInfo> out;
  for (const auto& [sid, id] : sessions_)
    if (auto run = runs_.find(id); run != runs_.end() && run->second->caller().uid == caller.uid &&
                                   run->second->state() != Run::State::queued &&
                                   run->second->state() != Run::State::booting)
      out.push_back(run->second->info());
  return out;
}

void Manager::cancel(RunId id) {
  if (auto it = runs_.find(id); it != runs_.end()) it->second->cancel();
}

void Manager::cancel_all() {
  std::vector<RunId> ids;
  for (auto& [id, run] : runs_) ids.push_back(id);
  for (auto id : ids) cancel(id);
}

void Manager::drain(std::chrono::milliseconds grace, std::function<void()> done) {
  draining_ = true;
  drained_ = std::move(done);
  uv_timer_stop(health_.get());
  uv_timer_stop(retry_refill_.get());
  for (auto& [key, t] : templates_) {
    bury(std::move(t.vm));
    options_.snapshots->abort(std::move(*t.pending));
  }
  templates_.clear();
  for (auto& pool : pools_) {
    while (!pool.ready.empty()) {
      bury(std::move(pool.ready.front().vm));
      pool.ready.pop_front();
    }
    for (auto& [raw, vm] : pool.booting) bury(std::move(vm));
    pool.booting.clear();
  }
  for (RunId id : std::deque<RunId>(queue_))
    if (auto it = runs_.find(id); it != runs_.end())
      it->second->fail(Error::make(ErrorCode::capacity, "sandboxd is shutting down"));
  // Idle sessions close now; busy ones after their current job (pump).
  std::vector<Run*> idle;
  for (auto& [id, run] : runs_)
    if (run->is_session() && run->state() == Run::State::idle) idle.push_back(run.get());
  for (Run* run : idle) run->close("sandboxd is shutting down");
  uv_timer_start(
      drain_timer_.get(),
      [](uv_timer_t* t) {
        auto* m = owner_of<Manager>(t);
        if (!m) return;
        if (!m->runs_.empty())
          log_warning("shutdown grace over; cancelling " + std::to_string(m->runs_.size()) + " runs");
        m->cancel_all();
      },
      static_cast<uint64_t>(grace.count()), 0);
  schedule_sweep();
}

proto::Status Manager::status() const {
  proto::Status s;
  s.version = options_.version;
  s.accelerator = std::string(accel_name(options_.vm.accel));
  s.accelerator_reason = options_.accel_reason;
  s.host_limits = options_.host_limits;
  s.vms = live_vms_;
  s.max_vms = options_.max_vms;
  for (const auto& [id, run] : runs_) {
    if (run->is_session()) ++s.sessions;
    else if (run->state() == Run::State::queued) ++s.runs_queued;
    else if (run->state() != Run::State::finished) ++s.runs_active;
  }
  for (size_t i = 0; i < kLanguageCount; ++i) {
    proto::PoolStats p;
    p.language = static_cast<proto::Language>(i);
    p.target = options_.pool_size[i];
    p.ready = static_cast<uint32_t>(pools_[i].ready.size());
    p.booting = static_cast<uint32_t>(pools_[i].booting.size());
    p.hits = pools_[i].hits;
    p.misses = pools_[i].misses;
    s.pool.push_back(p);
  }
  return s;
}

std::vector<proto::SnapshotInfo> Manager::snapshots(bool drop) {
  std::vector<proto::SnapshotInfo> out;
  if (!options_.snapshots) return out;
  auto entries = options_.snapshots->list();
  if (drop) {
    for (const auto& e : entries) options_.snapshots->drop(e.key);
    log_info("snapshot cache emptied (" + std::to_string(entries.size()) + " snapshots)");
    entries.clear();
  }
  for (const auto& e : entries) out.push_back({e.key, e.language, e.memory_mb, e.bytes});
  return out;
}

Result<std::unique_ptr<Vm>> Manager::start_vm(VmSpec spec, proto::Language language, Vm::Events events,
                                              std::string* how, bool allow_restore) {
  *how = "boot";
  if (options_.snapshots && allow_restore) {
    if (auto entry = options_.snapshots->find(options_.snapshots->key(language, spec.memory_mb))) {
      unique_fd state(::open(entry->state.c_str(), O_RDONLY | O_CLOEXEC));
      auto ram = options_.snapshots->clone_ram(*entry);
      if (!ram) log_warning("snapshot RAM unusable: " + ram.error().describe());
      if (state && ram) {
        VmSpec restore = spec;
        restore.incoming = true;
        restore.memory_shared = false;
        auto vm = Vm::start(loop_, std::move(restore), options_.boot_timeout, events, state.get(), *ram);
        if (vm) {
          ++live_vms_;
          *how = "snapshot";
          return vm;
        }
        log_warning("snapshot restore could not start: " + vm.error().describe());
      }
      discard_snapshot(language, spec.memory_mb, "its files could not be used");
    }
  }
  auto vm = Vm::start(loop_, spec, options_.boot_timeout, std::move(events));
  if (!vm) return std::move(vm).error();
  ++live_vms_;
  maybe_create_snapshot(language, spec.memory_mb);
  return vm;
}

void Manager::discard_snapshot(proto::Language language, uint32_t memory_mb, const std::string& why) {
  if (!options_.snapshots) return;
  log_warning("snapshot for " + std::string(proto::language_name(language)) + "/" + std::to_string(memory_mb) +
              " MB discarded: " + why);
  options_.snapshots->drop(options_.snapshots->key(language, memory_mb));
}

void Manager::maybe_create_snapshot(proto::Language language, uint32_t memory_mb) {
  auto* store = options_.snapshots;
  if (!store || draining_ || !has_capacity()) return;
  std::string key = store->key(language, memory_mb);
  if (templates_.count(key) || store->find(key)) return;
  auto pending = store->begin(language, memory_mb);
  if (!pending) {
    log_warning("cannot start a snapshot: " + pending.error().describe());
    return;
  }
  // A template VM: booted with its RAM in the snapshot's file, saved once
  // its interpreter waits, then destroyed. It never runs user code.
  VmSpec spec = options_.vm;
  spec.memory_mb = memory_mb;
  spec.prestart = language;
  spec.memory_shared = true;
  auto shared = std::make_shared<SnapshotStore::Pending>(std::move(*pending));
  Vm::Events ev;
  ev.ready = [this, key, shared] {
    auto it = templates_.find(key);
    if (it == templates_.end()) return;
    it->second.vm->snapshot([this, key, shared](Result<void> r) {
      auto t = templates_.find(key);
      if (t == templates_.end()) return;
      if (r) {
        auto entry = options_.snapshots->commit(std::move(*shared));
        if (entry)
          log_info("snapshot ready: " + std::string(proto::language_name(entry->language)) + "/" +
                   std::to_string(entry->memory_mb) + " MB, " + std::to_string(entry->bytes >> 20) + " MB on disk");
        else
          log_warning("cannot store a snapshot: " + entry.error().describe());
      } else {
        log_warning("snapshot failed: " + r.error().describe());
        options_.snapshots->abort(std::move(*shared));
      }
      bury(std::move(t->second.vm));
      templates_.erase(t);
    });
  };
  ev.failed = [this, key, shared](Error e) {
    auto t = templates_.find(key);
    if (t == templates_.end()) return;
    log_warning("snapshot template failed: " + e.describe().substr(0, 300));
    options_.snapshots->abort(std::move(*shared));
    bury(std::move(t->second.vm));
    templates_.erase(t);
  };
  auto vm = Vm::start(loop_, spec, options_.boot_timeout, std::move(ev), shared->state.get(), shared->ram_fd.get());
  if (!vm) {
    log_warning("cannot start a snapshot template: " + vm.error().describe());
    store->abort(std::move(*shared));
    return;
  }
  ++live_vms_;
  templates_.emplace(key, Template{std::move(*vm), shared});
}

Result<std::unique_ptr<Vm>> Manager::boot_vm(VmSpec spec, proto::Language language, std::function<void(Vm*)> on_ready,
                                             std::function<void(Vm*, Error)> on_failed) {
  // The Vm does not exist yet when the handlers are made; they find it
  // through this cell.
  auto self = std::make_shared<Vm*>(nullptr);
  Vm::Events ev;
  ev.ready = [self, on_ready] { on_ready(*self); };
  ev.failed = [self, on_failed](Error e) { on_failed(*self, std::move(e)); };
  std::string how;
  auto vm = start_vm(std::move(spec), language, std::move(ev), &how, options_.pool_restore);
  if (!vm) return std::move(vm).error();
  *self = vm->get();
  return vm;
}

void Manager::bury(std::unique_ptr<Vm> vm) {
  if (!vm) return;
  if (live_vms_ > 0) --live_vms_;
  dead_vms_.push_back(std::move(vm));
  schedule_sweep();
}

bool Manager::evict_idle() {
  // Oldest ready VM of any language first, then a booting one.
  Pool* oldest = nullptr;
  for (auto& pool : pools_)
    if (!pool.ready.empty() && (!oldest || pool.ready.front().since < oldest->ready.front().since)) oldest = &pool;
  if (oldest) {
    bury(std::move(oldest->ready.front().vm));
    oldest->ready.pop_front();
    return true;
  }
  for (auto& pool : pools_)
    if (!pool.booting.empty()) {
      bury(std::move(pool.booting.begin()->second));
      pool.booting.erase(pool.booting.begin());
      return true;
    }
  return false;
}

std::unique_ptr<Vm> Manager::take_warm(proto::Language language) {
  auto& ready = pools_[index_of(language)].ready;
  while (!ready.empty()) {
    auto vm = std::move(ready.front().vm);
    ready.pop_front();
    if (vm->state() == Vm::State::ready) {
      schedule_sweep();  // refill behind it
      return vm;
    }
    bury(std::move(vm));
  }
  return nullptr;
}

void Manager::refill() {
  if (draining_ || !queue_.empty() || uv_is_active(reinterpret_cast<uv_handle_t*>(retry_refill_.get()))) return;
  for (;;) {
    uint32_t booting = 0;
    for (auto& pool : pools_) booting += static_cast<uint32_t>(pool.booting.size());
    if (booting >= options_.pool_refill_concurrency || !has_capacity()) return;
    // The language furthest below its target goes first.
    size_t best = kLanguageCount;
    int64_t best_gap = 0;
    for (size_t i = 0; i < kLanguageCount; ++i) {
      int64_t gap = int64_t{options_.pool_size[i]} - int64_t(pools_[i].ready.size() + pools_[i].booting.size());
      if (gap > best_gap) best = i, best_gap = gap;
    }
    if (best == kLanguageCount) return;
    auto language = static_cast<proto::Language>(best);
    VmSpec spec = options_.vm;
    spec.memory_mb = options_.pool_memory_mb;
    spec.prestart = language;
    // Pool VMs wait for callers anyway: under TCG, spend that time warming
    // the translation cache of a restored VM rather than the first run.
    spec.warm_up = spec.accel == Accel::tcg;
    auto vm = boot_vm(
        spec, language, [this, language](Vm* vm) { on_pool_ready(language, vm); },
        [this, language](Vm* vm, Error e) { on_pool_failed(language, vm, std::move(e)); });
    if (!vm) {
      log_error("warm pool: cannot start a VM: " + vm.error().describe());
      uv_timer_start(retry_refill_.get(), [](uv_timer_t* t) {
        if (auto* m = owner_of<Manager>(t)) m->refill();
      }, static_cast<uint64_t>(kRefillBackoff.count()), 0);
      return;
    }
    Vm* raw = vm->get();
    pools_[best].booting.emplace(raw, std::move(*vm));
  }
}

void Manager::on_pool_ready(proto::Language language, Vm* vm) {
  auto& pool = pools_[index_of(language)];
  auto it = pool.booting.find(vm);
  if (it == pool.booting.end()) return;
  auto owned = std::move(it->second);
  pool.booting.erase(it);
  if (owned->prestarted() != language)
    log_warning("warm pool: a " + std::string(proto::language_name(language)) +
                " VM came up without its interpreter; runs on it start one");
  Vm::Events ev;
  ev.failed = [this, vm](Error e) { remove_idle(vm, e.message.substr(0, 200)); };
  ev.pong = [this, vm](uint64_t seq) {
    for (auto& pool : pools_)
      for (auto& idle : pool.ready)
        if (idle.vm.get() == vm && idle.ping_seq == seq) idle.ping_seq = 0;
  };
  owned->set_events(std::move(ev));
  pool.ready.push_back(Idle{std::move(owned), Clock::now(), 0});
  log_debug("warm pool: " + std::string(proto::language_name(language)) + " VM ready in " +
            std::to_string(ms_between(vm->started_at(), vm->ready_at())) + " ms");
  schedule_sweep();
}

void Manager::on_pool_failed(proto::Language language, Vm* vm, Error e) {
  auto& pool = pools_[index_of(language)];
  auto it = pool.booting.find(vm);
  if (it == pool.booting.end()) return;
  log_warning("warm pool: " + std::string(proto::language_name(language)) + " VM failed to boot: " +
              e.describe().substr(0, 300));
  if (it->second->restored()) discard_snapshot(language, options_.pool_memory_mb, "restore failed");
  bury(std::move(it->second));
  pool.booting.erase(it);
  uv_timer_start(retry_refill_.get(), [](uv_timer_t* t) {
    if (auto* m = owner_of<Manager>(t)) m->refill();
  }, static_cast<uint64_t>(kRefillBackoff.count()), 0);
}

void Manager::remove_idle(Vm* vm, const std::string& why) {
  for (auto& pool : pools_)
    for (auto it = pool.ready.begin(); it != pool.ready.end(); ++it)
      if (it->vm.get() == vm) {
        log_info("warm pool: replacing a VM: " + why);
        bury(std::move(it->vm));
        pool.ready.erase(it);
        return;
      }
}

void Manager::health_tick() {
  auto now = Clock::now();
  std::vector<std::pair<Vm*, std::string>> drop;
  for (auto& pool : pools_)
    for (auto& idle : pool.ready) {
      if (now - idle.since > options_.pool_max_idle)
        drop.emplace_back(idle.vm.get(), "idle past its maximum age");
      else if (idle.ping_seq != 0)
        drop.emplace_back(idle.vm.get(), "stopped answering");
      else if (idle.ping_seq = next_ping_++; !idle.vm->ping(idle.ping_seq))
        drop.emplace_back(idle.vm.get(), "cannot reach its agent");
    }
  for (auto& [vm, why] : drop) remove_idle(vm, why);
}

void Manager::admit() {
  while (!queue_.empty()) {
    auto it = runs_.find(queue_.front());
    if (it == runs_.end() || it->second->state() != Run::State::queued) {
      queue_.pop_front();
      continue;
    }
    if (!it->second->try_start()) return;
    queue_.pop_front();
  }
}

void Manager::finished(RunId id) {
  if (auto it = runs_.find(id); it != runs_.end()) {
    auto& run = *it->second;
    auto& counts = run.is_session() ? sessions_per_uid_ : per_uid_;
    if (auto u = counts.find(run.caller().uid); u != counts.end() && --u->second == 0) counts.erase(u);
    if (run.is_session()) {
      sessions_.erase(run.session());
      closed_[run.session()] = {run.caller().uid, run.closed_reason().empty() ? "closed" : run.closed_reason()};
      closed_order_.push_back(run.session());
      if (closed_order_.size() > kClosedSessionsKept) {
        closed_.erase(closed_order_.front());
        closed_order_.pop_front();
      }
    }
    dead_runs_.push_back(std::move(it->second));
    runs_.erase(it);
  }
  std::erase(queue_, id);
  schedule_sweep();
}

void Manager::schedule_sweep() {
  if (!sweep_) return;
  uv_timer_start(
      sweep_.get(),
      [](uv_timer_t* t) {
        auto* m = owner_of<Manager>(t);
        if (!m) return;
        m->dead_runs_.clear();
        m->dead_vms_.clear();
        m->admit();
        m->pump_sessions();
        m->refill();
        m->maybe_drained();
      },
      0, 0);
}

void Manager::pump_sessions() {
  std::vector<Run*> ready;
  for (auto& [id, run] : runs_)
    if (run->state() == Run::State::idle) ready.push_back(run.get());
  for (Run* run : ready) run->pump();
}

void Manager::maybe_drained() {
  if (!draining_ || !runs_.empty() || !drained_) return;
  uv_timer_stop(drain_timer_.get());
  auto done = std::move(drained_);
  drained_ = nullptr;
  done();
}

}  // namespace sandbox::daemon
