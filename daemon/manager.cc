#include "daemon/manager.h"

#include "common/limits.h"
#include "common/validate.h"
#include "daemon/log.h"
#include "daemon/process.h"
#include "daemon/vm.h"

namespace sandbox::daemon {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t ms_between(Clock::time_point a, Clock::time_point b) {
  if (b < a) return 0;
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
}

}  // namespace

// One run: boot (with retries), exec, collect, report. States:
//   booting -> executing -> finished; any -> finished on error or cancel.
class Manager::Run {
 public:
  Run(Manager* m, RunId id, Caller caller, proto::RunRequest req, std::weak_ptr<RunObserver> obs)
      : mgr_(m), id_(id), caller_(caller), req_(std::move(req)), observer_(std::move(obs)), accepted_(Clock::now()) {
    kill_timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(m->loop_, t); });
  }
  ~Run() {
    if (vm_) mgr_->bury(std::move(vm_));
  }

  Result<void> start() { return boot(); }

  void cancel() {
    if (finished_) return;
    finished_ = true;
    log_info("run " + std::to_string(id_) + " cancelled: caller went away");
    end();
  }

 private:
  Result<void> boot() {
    ++attempts_;
    VmSpec spec = mgr_->options_.vm;
    spec.memory_mb = req_.memory_mb;
    Vm::Events ev;
    ev.ready = [this] { on_ready(); };
    ev.output = [this](proto::Output&& o) { on_output(std::move(o)); };
    ev.done = [this](proto::ExecDone&& d) { on_done(d); };
    ev.exec_error = [this](proto::ErrorReply&& e) { fail(Error::make(e.code, "guest: " + e.message)); };
    ev.failed = [this](Error e) { on_vm_failed(std::move(e)); };
    auto vm = Vm::start(mgr_->loop_, spec, mgr_->options_.boot_timeout, std::move(ev));
    if (!vm) return std::move(vm).error();
    vm_ = std::move(*vm);
    if (attempts_ == 1) spawned_ = Clock::now();
    return ok();
  }

  void on_ready() {
    ready_ = Clock::now();
    const auto& o = mgr_->options_;
    proto::Exec exec{id_, req_.language, req_.code, req_.env, req_.timeout_ms,
                     static_cast<uint32_t>(o.kill_grace.count()), limits::kMaxStdoutBytes, limits::kMaxStderrBytes,
                     o.pids_max};
    if (auto r = vm_->exec(exec); !r) return fail(std::move(r).error());
    exec_sent_ = Clock::now();
    cpu_at_start_ = usage().cpu_ms;
    // The guest enforces the timeout; this catches a guest that cannot.
    auto deadline = std::chrono::milliseconds(req_.timeout_ms) + o.kill_grace + o.kill_slack;
    uv_timer_start(
        kill_timer_.get(),
        [](uv_timer_t* t) {
          if (auto* run = owner_of<Run>(t)) run->on_host_deadline();
        },
        static_cast<uint64_t>(deadline.count()), 0);
  }

  void on_output(proto::Output&& o) {
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
    if (auto obs = observer_.lock()) obs->on_output(req_.id, o.stream, keep);
  }

  void on_done(const proto::ExecDone& d) {
    proto::RunResult r = base_result();
    r.exit_code = d.exit_code;
    r.signal = d.signal;
    r.timed_out = d.timed_out;
    r.execution_time_ms = d.duration_ms;
    r.stdout_truncated = r.stdout_truncated || d.stdout_truncated;
    r.stderr_truncated = r.stderr_truncated || d.stderr_truncated;
    succeed(std::move(r));
  }

  ProcessUsage usage() const {
    if (!vm_) return {};
    return read_process_usage(vm_->pid()).value_or(ProcessUsage{});
  }

  void on_host_deadline() {
    if (finished_) return;
    proto::RunResult r = base_result();
    r.timed_out = true;
    r.signal = 9;
    r.exit_code = 128 + 9;
    r.execution_time_ms = ms_between(exec_sent_, Clock::now());
    log_warning("run " + std::to_string(id_) + ": guest missed its deadline; VM killed");
    succeed(std::move(r));
  }

  void on_vm_failed(Error e) {
    if (finished_) return;
    bool booting = !ready_.time_since_epoch().count();
    bool retryable = e.code == ErrorCode::timeout || e.code == ErrorCode::vm_boot_failed;
    if (booting && retryable && attempts_ <= mgr_->options_.boot_retries) {
      log_warning("run " + std::to_string(id_) + ": boot attempt " + std::to_string(attempts_) + " failed (" +
                  e.describe().substr(0, 200) + "); retrying");
      mgr_->bury(std::move(vm_));
      if (auto r = boot(); !r) fail(std::move(r).error());
      return;
    }
    if (booting && e.code == ErrorCode::timeout) e.code = ErrorCode::vm_boot_failed;
    fail(std::move(e));
  }

  proto::RunResult base_result() {
    auto now = Clock::now();
    proto::RunResult r;
    r.id = req_.id;
    r.stdout_data = std::move(stdout_);
    r.stderr_data = std::move(stderr_);
    r.stdout_truncated = stdout_truncated_;
    r.stderr_truncated = stderr_truncated_;
    r.timing.setup_ms = ms_between(accepted_, spawned_);
    r.timing.boot_ms = ms_between(spawned_, ready_);
    r.timing.execute_ms = ms_between(exec_sent_, now);
    r.timing.total_ms = ms_between(accepted_, now);
    // Measured on the host, for the QEMU process while the code ran.
    auto u = usage();
    r.cpu_time_ms = u.cpu_ms > cpu_at_start_ ? u.cpu_ms - cpu_at_start_ : 0;
    r.memory_peak_mb = (u.peak_rss_kb + 1023) / 1024;
    r.warm_pool_hit = false;
    r.accelerator = std::string(accel_name(mgr_->options_.vm.accel));
    return r;
  }

  void succeed(proto::RunResult r) {
    if (finished_) return;
    finished_ = true;
    log_info("run id=" + std::to_string(id_) + " uid=" + std::to_string(caller_.uid) + " language=" +
             std::string(proto::language_name(req_.language)) + " exit=" + std::to_string(r.exit_code) +
             " timed_out=" + (r.timed_out ? "1" : "0") + " boot_ms=" + std::to_string(r.timing.boot_ms) +
             " total_ms=" + std::to_string(r.timing.total_ms) + " accel=" + r.accelerator);
    if (auto obs = observer_.lock()) obs->on_result(std::move(r));
    end();
  }

  void fail(Error e) {
    if (finished_) return;
    finished_ = true;
    log_info("run id=" + std::to_string(id_) + " uid=" + std::to_string(caller_.uid) + " failed: " +
             e.describe().substr(0, 500));
    if (auto obs = observer_.lock()) obs->on_error(proto::ErrorReply{req_.id, e.code, e.message});
    end();
  }

  void end() {
    if (kill_timer_) uv_timer_stop(kill_timer_.get());
    if (vm_) mgr_->bury(std::move(vm_));
    mgr_->finished(id_);
  }

  Manager* mgr_;
  RunId id_;
  Caller caller_;
  proto::RunRequest req_;
  std::weak_ptr<RunObserver> observer_;
  std::unique_ptr<Vm> vm_;
  UvHandle<uv_timer_t> kill_timer_;
  uint32_t attempts_ = 0;
  bool finished_ = false;
  std::string stdout_, stderr_;
  bool stdout_truncated_ = false, stderr_truncated_ = false;
  Clock::time_point accepted_, spawned_, ready_, exec_sent_;
  uint64_t cpu_at_start_ = 0;
};

Manager::Manager(uv_loop_t* loop, ManagerOptions options) : loop_(loop), options_(std::move(options)) {
  sweep_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); });
}

Manager::~Manager() {
  cancel_all();
  dead_runs_.clear();
  dead_vms_.clear();
}

Result<Manager::RunId> Manager::run(const Caller& caller, proto::RunRequest request,
                                    std::weak_ptr<RunObserver> observer) {
  if (auto v = validate_run_request(request); !v) return std::move(v).error();
  RunId id = next_id_++;
  auto run = std::make_unique<Run>(this, id, caller, std::move(request), std::move(observer));
  if (auto r = run->start(); !r) {
    dead_runs_.push_back(std::move(run));
    schedule_sweep();
    return std::move(r).error();
  }
  runs_.emplace(id, std::move(run));
  return id;
}

void Manager::cancel(RunId id) {
  if (auto it = runs_.find(id); it != runs_.end()) it->second->cancel();
}

void Manager::cancel_all() {
  std::vector<RunId> ids;
  for (auto& [id, run] : runs_) ids.push_back(id);
  for (auto id : ids) cancel(id);
}

size_t Manager::active_runs() const { return runs_.size(); }

void Manager::finished(RunId id) {
  if (auto it = runs_.find(id); it != runs_.end()) {
    dead_runs_.push_back(std::move(it->second));
    runs_.erase(it);
  }
  schedule_sweep();
}

void Manager::bury(std::unique_ptr<Vm> vm) {
  if (!vm) return;
  dead_vms_.push_back(std::move(vm));
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
      },
      0, 0);
}

}  // namespace sandbox::daemon
