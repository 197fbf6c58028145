#include "daemon/lease.h"

#include <array>

#include <sandbox/limits.h>

#include "common/files.h"
#include "common/net_frame.h"
#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

using ms = std::chrono::milliseconds;

uint64_t ms_between(Clock::time_point a, Clock::time_point b) {
  if (b < a || a == Clock::time_point{}) return 0;
  return static_cast<uint64_t>(std::chrono::duration_cast<ms>(b - a).count());
}

uint64_t wall_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<ms>(std::chrono::system_clock::now().time_since_epoch()).count());
}

// The audit kind and wire name of a job's request.
std::pair<AuditKind, std::string_view> job_kind(const proto::Message& m) {
  if (std::holds_alternative<proto::SessionExec>(m)) return {AuditKind::session_exec, "session_exec"};
  if (std::holds_alternative<proto::FileWrite>(m)) return {AuditKind::file_write, "file_write"};
  if (std::holds_alternative<proto::FileRead>(m)) return {AuditKind::file_read, "file_read"};
  if (std::holds_alternative<proto::FileListRequest>(m)) return {AuditKind::file_list, "file_list_request"};
  if (std::holds_alternative<proto::SessionClose>(m)) return {AuditKind::session_close, "session_close"};
  return {AuditKind::run, "run"};
}

std::string path_of(const proto::Message& m) {
  if (auto* w = std::get_if<proto::FileWrite>(&m)) return w->path;
  if (auto* r = std::get_if<proto::FileRead>(&m)) return r->path;
  if (auto* l = std::get_if<proto::FileListRequest>(&m)) return l->path;
  return {};
}

constexpr size_t kStates = 5;
constexpr size_t kEvents = 10;
using S = Lease::State;
using E = Lease::Event;

// Which event is legal in which state; anything else is ignored (events
// race with each other: a VM may fail just as its lease is cancelled).
//                                          queued starting idle  busy  finished
constexpr std::array<std::array<bool, kStates>, kEvents> kLegal = {{
    /* admit          */ {{true, false, false, false, false}},
    /* vm_ready       */ {{false, true, false, false, false}},
    /* job            */ {{false, false, true, false, false}},
    /* job_done       */ {{false, false, false, true, false}},
    /* vm_failed      */ {{false, true, true, true, false}},
    /* cancel         */ {{true, true, true, true, false}},
    /* close          */ {{true, true, true, true, false}},
    /* idle_timeout   */ {{false, false, true, false, false}},
    /* queue_deadline */ {{true, false, false, false, false}},
    /* host_deadline  */ {{false, false, false, true, false}},
}};

}  // namespace

// The guest's proxies, for clients that prefer one (curl reads only the
// lower-case http_proxy). Set only while egress is on: with it off nothing
// listens there, and a client should fail as it would with no network; a
// session whose egress was closed gets them unset (empty values).
EnvList proxy_env(bool egress) {
  std::string http = egress ? "http://127.0.0.1:" + std::to_string(net::kProxyPort) : "";
  std::string socks = egress ? "socks5h://127.0.0.1:" + std::to_string(net::kSocksPort) : "";
  std::string local = egress ? "localhost,127.0.0.1,::1" : "";
  return {{"http_proxy", http},   {"HTTP_PROXY", http}, {"https_proxy", http}, {"HTTPS_PROXY", http},
          {"all_proxy", socks},   {"ALL_PROXY", socks}, {"no_proxy", local},   {"NO_PROXY", local}};
}

std::string_view lease_state_name(Lease::State state) {
  static constexpr std::array<std::string_view, kStates> kNames = {"queued", "starting", "idle", "busy", "finished"};
  return kNames[static_cast<size_t>(state)];
}

Lease::Lease(LeaseHost& host, uv_loop_t* loop, LeaseId id, Caller caller, LeaseSpec spec, uint64_t request_id,
             std::weak_ptr<Sink> sink)
    : host_(host), id_(id), caller_(caller), spec_(std::move(spec)), request_id_(request_id), sink_(std::move(sink)),
      accepted_(Clock::now()), created_wall_(wall_ms()) {
  auto make = [&] { return UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); }); };
  timer_ = make();
  idle_ = make();
  start_queue_clock();
}

void Lease::start_queue_clock() {
  uv_timer_start(
      timer_.get(),
      [](uv_timer_t* t) {
        auto* lease = owner_of<Lease>(t);
        if (!lease || !lease->accept(Event::queue_deadline)) return;
        lease->fail(Error::make(ErrorCode::capacity, "no VM slot became free within the queue deadline (" +
                                                         std::to_string(lease->host_.lease_config().queue_timeout.count()) +
                                                         " ms); try again later"));
      },
      static_cast<uint64_t>(host_.lease_config().queue_timeout.count()), 0);
}

void Lease::pause_queue_clock() {
  if (state_ == State::queued) uv_timer_stop(timer_.get());
}

void Lease::set_layer(std::shared_ptr<LayerGrant> layer) {
  spec_.layer = std::move(layer);
  if (state_ == State::queued) start_queue_clock();
}

Lease::~Lease() {
  if (vm_) host_.release_vm(std::move(vm_));
}

bool Lease::accept(Event e) {
  bool legal = kLegal[static_cast<size_t>(e)][static_cast<size_t>(state_)];
  if (!legal)
    log_debug(name() + ": event " + std::to_string(static_cast<int>(e)) + " ignored in state " +
              std::string(lease_state_name(state_)));
  return legal;
}

std::string Lease::name() const { return is_session() ? "session " + spec_.session : "run " + std::to_string(id_); }

void Lease::deliver(const std::weak_ptr<Sink>& sink, proto::Message&& m) {
  if (auto s = sink.lock()) s->deliver(std::move(m));
}

SessionInfo Lease::info() const {
  return {spec_.session, spec_.language, spec_.memory_mb, spec_.idle_timeout, exec_count_, created_wall_,
          last_activity_wall_ ? last_activity_wall_ : created_wall_, vm_start_,
          vm_ ? vm_->exposed_ports() : std::vector<ExposedPort>{}, spec_.allowed_domains,
          spec_.layer ? spec_.layer->use() : LayerUse{}};
}

void Lease::enqueue(Job job) {
  jobs_.push_back(std::move(job));
  if (state_ == State::idle) host_.poke();
}

bool Lease::try_start() {
  if (!accept(Event::admit)) return true;  // no longer waiting: the queue moves on
  if (auto vm = host_.take_warm(spec_)) {
    warm_ = true;
    vm_start_ = "pool";
    adopt(std::move(vm));
    return true;
  }
  if (!host_.make_room()) return false;
  uv_timer_stop(timer_.get());
  host_.cold_start(spec_);
  state_ = State::starting;
  if (auto r = boot(); !r) fail(std::move(r).error());
  return true;
}

VmEvents Lease::vm_events() {
  VmEvents ev;
  ev.ready = [this] { on_vm_ready(); };
  ev.output = [this](proto::Output&& o) { on_output(std::move(o)); };
  ev.done = [this](proto::ExecDone&& d) { on_done(d); };
  ev.job_error = [this](proto::ErrorReply&& e) { on_job_error(Error::make(e.code, std::move(e.message))); };
  ev.file = [this](proto::Message&& m) { on_file(std::move(m)); };
  ev.failed = [this](Error e) { on_vm_failed(std::move(e)); };
  return ev;
}

void Lease::adopt(std::unique_ptr<VmHandle> vm) {
  uv_timer_stop(timer_.get());
  vm_ = std::move(vm);
  vm_name_ = vm_->name();
  vm_->set_events(vm_events());
  spawned_ = ready_ = Clock::now();
  state_ = State::starting;
  on_vm_ready();
}

Result<void> Lease::boot() {
  ++attempts_;
  net_configured_ = false;  // a new VM has no policy yet
  std::string how;
  // A snapshot is tried once; a retry boots.
  bool allow_restore = !restoring_ && vm_start_.empty();
  auto vm = host_.start_vm(spec_, vm_events(), allow_restore, &how);
  if (!vm) return std::move(vm).error();
  vm_ = std::move(*vm);
  vm_name_ = vm_->name();
  restoring_ = how == "snapshot";
  if (vm_start_.empty())
    vm_start_ = how;
  else if (vm_start_ == "snapshot")
    vm_start_ = "boot (snapshot failed)";
  if (attempts_ == 1) spawned_ = Clock::now();
  return ok();
}

void Lease::on_vm_ready() {
  if (!accept(Event::vm_ready)) return;
  if (!spec_.net.empty() && !net_configured_) {
    net_configured_ = true;
    std::weak_ptr<bool> alive = alive_;
    std::string who = "uid=" + std::to_string(caller_.uid) + " " + (is_session() ? "session=" + spec_.session : "run=" + std::to_string(id_));
    // The answer counts only for this VM: a replacement (a failed restore,
    // a boot retry) gets the policy anew.
    VmHandle* target = vm_.get();
    auto r = vm_->configure_network(spec_.net, who, [this, alive, target](Result<void> r) {
      if (alive.lock() && vm_.get() == target) on_network_ready(std::move(r));
    });
    if (!r) fail(std::move(r).error());
    return;
  }
  state_ = State::idle;
  restoring_ = false;
  if (ready_ == Clock::time_point{}) ready_ = Clock::now();
  if (is_session()) {
    log_info("session " + spec_.session + " uid=" + std::to_string(caller_.uid) +
             " language=" + std::string(language_name(spec_.language)) + " opened (" + vm_start_ + ", " +
             std::to_string(ms_between(accepted_, ready_)) + " ms)");
    opened_ = true;
    host_.metrics().session_opened();
    auto e = audit_entry(AuditKind::session_open, "session_create");
    e.result = "ok";
    e.numbers = {{"QUEUE_MS", ms_between(accepted_, spawned_)}, {"BOOT_MS", ms_between(spawned_, ready_)},
                 {"TOTAL_MS", ms_between(accepted_, ready_)}};
    audit(e);
    deliver(sink_, proto::SessionList{request_id_, {info()}});
    arm_idle();
  }
  pump();
}

void Lease::on_network_ready(Result<void> r) {
  if (state_ != State::starting) return;
  if (!r) return fail(std::move(r).error().context("setting up the VM's network"));
  on_vm_ready();
}

void Lease::on_vm_failed(Error e) {
  if (!accept(Event::vm_failed)) return;
  bool starting = state_ == State::starting;
  if (starting && !restoring_) host_.metrics().boot_failed();
  if (starting && restoring_) {
    // A restore that failed: the next try boots (and the snapshot may go).
    host_.restore_failed(spec_, e);
    host_.release_vm(std::move(vm_));
    --attempts_;
    if (auto r = boot(); !r) fail(std::move(r).error());
    return;
  }
  bool retryable = e.code == ErrorCode::timeout || e.code == ErrorCode::vm_boot_failed;
  if (starting && retryable && attempts_ <= host_.lease_config().boot_retries) {
    log_warning(name() + ": boot attempt " + std::to_string(attempts_) + " failed (" + e.describe().substr(0, 200) +
                "); retrying");
    host_.release_vm(std::move(vm_));
    if (auto r = boot(); !r) fail(std::move(r).error());
    return;
  }
  if (starting && e.code == ErrorCode::timeout) e.code = ErrorCode::vm_boot_failed;
  if (state_ == State::idle) return close("its VM stopped (" + e.message.substr(0, 200) + ")");
  fail(std::move(e));
}

void Lease::arm_idle() {
  last_activity_wall_ = wall_ms();
  uv_timer_start(
      idle_.get(),
      [](uv_timer_t* t) {
        auto* lease = owner_of<Lease>(t);
        if (!lease || !lease->accept(Event::idle_timeout)) return;
        lease->close("idle for " + std::to_string(lease->spec_.idle_timeout.count() / 1000) + " s");
      },
      static_cast<uint64_t>(spec_.idle_timeout.count()), 0);
}

void Lease::pump() {
  if (state_ != State::idle) return;
  if (host_.draining() && is_session()) return close("sandboxd is shutting down");
  if (jobs_.empty() || !accept(Event::job)) return;
  current_ = std::move(jobs_.front());
  jobs_.pop_front();
  current_cancelled_ = false;
  uv_timer_stop(idle_.get());
  state_ = State::busy;
  auto& request = current_->request;
  if (auto* run = std::get_if<proto::Run>(&request)) return start_exec(run->request.code, run->request.timeout);
  if (auto* exec = std::get_if<proto::SessionExec>(&request)) return start_exec(exec->code, ms(exec->timeout_ms));
  if (auto* net = std::get_if<proto::SessionNetwork>(&request)) return start_network_change(*net);
  if (std::holds_alternative<proto::SessionClose>(request)) {
    auto sink = current_->sink;
    uint64_t rid = current_->request_id;
    close("closed by its owner");
    return deliver(sink, proto::Ack{rid});
  }
  start_file_job();
}

void Lease::start_exec(const std::string& code, ms timeout) {
  const auto& c = host_.lease_config();
  if (timeout.count() == 0) timeout = spec_.timeout;
  stdout_.clear();
  stderr_.clear();
  stdout_truncated_ = stderr_truncated_ = false;
  proto::Exec exec;
  exec.id = ++agent_seq_;
  exec.language = spec_.language;
  exec.code = code;
  exec.env = spec_.env;
  bool egress = !spec_.net.rules.empty();
  if (egress || proxy_env_set_) exec.code_env = proxy_env(egress);
  proxy_env_set_ = egress;
  exec.timeout_ms = static_cast<uint32_t>(timeout.count());
  exec.startup_timeout_ms = static_cast<uint32_t>(c.startup_timeout.count());
  exec.grace_ms = static_cast<uint32_t>(c.kill_grace.count());
  exec.stdout_limit = limits::kMaxStdoutBytes;
  exec.stderr_limit = limits::kMaxStderrBytes;
  exec.pids_max = c.pids_max;
  exec.session = is_session();
  if (auto r = vm_->start_job(exec.id, {exec}); !r) return fail(std::move(r).error());
  exec_sent_ = Clock::now();
  cpu_at_start_ = vm_->usage().cpu_ms;
  // The guest enforces both bounds; this catches a guest that cannot.
  auto deadline = c.startup_timeout + timeout + c.kill_grace + c.kill_slack;
  uv_timer_start(timer_.get(), [](uv_timer_t* t) {
    if (auto* lease = owner_of<Lease>(t)) lease->on_host_deadline();
  }, static_cast<uint64_t>(deadline.count()), 0);
}

void Lease::start_network_change(const proto::SessionNetwork& request) {
  auto rules = parse_domain_rules(request.allowed_domains);
  if (!rules) return on_job_error(rules.error());
  NetPolicy policy{std::move(*rules), spec_.net.expose};
  std::weak_ptr<bool> alive = alive_;
  std::string who = "uid=" + std::to_string(caller_.uid) + " session=" + spec_.session;
  auto domains = request.allowed_domains;
  auto r = vm_->configure_network(policy, who, [this, alive, policy, domains](Result<void> r) {
    if (!alive.lock() || state_ != State::busy || !current_) return;
    if (!r) return fail(std::move(r).error().context("changing the session's network"));
    spec_.net = policy;
    spec_.allowed_domains = domains;
    log_info(name() + " uid=" + std::to_string(caller_.uid) + " network " +
             (domains.empty() ? std::string("off") : std::to_string(domains.size()) + " domains"));
    auto sink = current_->sink;
    uint64_t rid = current_->request_id;
    if (!accept(Event::job_done)) return;
    job_finished();
    deliver(sink, proto::SessionList{rid, {info()}});
  });
  if (!r) return on_job_error(r.error());
  net_configured_ = true;
  // Bounded like any job: a guest that never acknowledges loses its VM.
  uv_timer_start(timer_.get(), [](uv_timer_t* t) {
    auto* lease = owner_of<Lease>(t);
    if (lease && lease->accept(Event::host_deadline))
      lease->fail(Error::make(ErrorCode::timeout, "the guest did not take the new network policy in time"));
  }, static_cast<uint64_t>(host_.lease_config().file_deadline.count()), 0);
}

void Lease::start_file_job() {
  uint64_t seq = ++agent_seq_;
  file_bytes_ = 0;
  file_chunks_ = 0;
  std::vector<proto::Message> frames;
  auto& request = current_->request;
  if (auto* w = std::get_if<proto::FileWrite>(&request)) {
    frames.push_back(proto::FileWrite{seq, "", w->path, w->size, w->executable});
    for (auto& c : current_->chunks) frames.push_back(proto::FileChunk{seq, std::move(c)});
    current_->chunks.clear();
  } else if (auto* r = std::get_if<proto::FileRead>(&request)) {
    frames.push_back(proto::FileRead{seq, "", r->path});
  } else if (auto* l = std::get_if<proto::FileListRequest>(&request)) {
    frames.push_back(proto::FileListRequest{seq, "", l->path});
  } else {
    return on_job_error(Error::make(ErrorCode::internal, "unknown session job"));
  }
  if (auto r = vm_->start_job(seq, frames); !r) return fail(std::move(r).error());
  // Bounded like an exec: a guest that never answers loses its VM.
  uv_timer_start(timer_.get(), [](uv_timer_t* t) {
    auto* lease = owner_of<Lease>(t);
    if (lease && lease->accept(Event::host_deadline))
      lease->fail(Error::make(ErrorCode::timeout, "the guest did not complete a file transfer in time"));
  }, static_cast<uint64_t>(host_.lease_config().file_deadline.count()), 0);
}

void Lease::on_file(proto::Message&& m) {
  if (state_ != State::busy || !current_) return;
  uint64_t rid = current_->request_id;
  if (auto* chunk = std::get_if<proto::FileChunk>(&m)) {
    // The guest is not trusted with the size either.
    auto n = chunk_content_size(chunk->data);
    if (!n || file_bytes_ + *n > limits::kMaxFileBytes || ++file_chunks_ > limits::kMaxFileChunks)
      return fail(Error::make(ErrorCode::communication, "the guest sent a malformed or oversized file"));
    file_bytes_ += *n;
    if (!current_cancelled_) deliver(current_->sink, proto::FileChunk{rid, std::move(chunk->data)});
    return;
  }
  if (!accept(Event::job_done)) return;
  auto sink = current_->sink;
  proto::Message reply = proto::Ack{rid};
  auto [kind, request] = job_kind(current_->request);
  auto entry = audit_entry(kind, request);
  entry.result = "ok";
  if (auto* done = std::get_if<proto::FileDone>(&m)) {
    if (std::holds_alternative<proto::FileRead>(current_->request) && done->size != file_bytes_)
      return fail(Error::make(ErrorCode::communication, "the guest sent a file whose size does not add up"));
    reply = proto::FileDone{rid, done->size};
    host_.metrics().file_transfer(kind == AuditKind::file_write, done->size);
    entry.numbers.emplace_back("BYTES", done->size);
  } else if (auto* list = std::get_if<proto::FileList>(&m)) {
    list->id = rid;
    entry.numbers.emplace_back("ENTRIES", list->listing.entries.size());
    reply = std::move(*list);
  }
  entry.numbers.emplace_back("TOTAL_MS", ms_between(current_->accepted, Clock::now()));
  audit(entry);
  job_finished();
  deliver(sink, std::move(reply));
}

void Lease::on_output(proto::Output&& o) {
  if (state_ != State::busy || !current_) return;
  bool is_out = o.stream == Stream::out;
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
  if (!current_cancelled_) deliver(current_->sink, proto::Output{current_->request_id, o.stream, std::string(keep)});
}

void Lease::on_done(const proto::ExecDone& d) {
  if (state_ != State::busy || !current_) return;
  RunResult r = base_result();
  r.exit_code = d.exit_code;
  r.signal = d.signal;
  r.timed_out = d.timed_out;
  r.execution_time_ms = d.duration_ms;
  r.timing.startup_ms = d.startup_ms;
  r.timing.execute_ms = r.timing.execute_ms > d.startup_ms ? r.timing.execute_ms - d.startup_ms : 0;
  r.stdout_truncated = r.stdout_truncated || d.stdout_truncated;
  r.stderr_truncated = r.stderr_truncated || d.stderr_truncated;
  r.state_lost = d.state_lost;
  succeed(std::move(r));
}

void Lease::on_job_error(Error e) {
  if (state_ != State::busy || !current_) return;
  if (!is_session()) return fail(std::move(e));
  if (!accept(Event::job_done)) return;
  record_error(e);
  auto sink = current_->sink;
  uint64_t rid = current_->request_id;
  job_finished();
  deliver(sink, proto::ErrorReply{rid, e.code, e.message});
}

void Lease::on_host_deadline() {
  if (!accept(Event::host_deadline)) return;
  RunResult r = base_result();
  r.timed_out = true;
  r.signal = 9;
  r.exit_code = 128 + 9;
  r.execution_time_ms = ms_between(exec_sent_, Clock::now());
  r.state_lost = is_session();
  log_warning(name() + ": guest missed its deadline; VM killed");
  if (current_) record_result(r);
  closed_reason_ = "its VM missed an exec deadline and was killed";
  auto sink = current_ ? current_->sink : std::weak_ptr<Sink>();
  uint64_t rid = current_ ? current_->request_id : 0;
  end();
  deliver(sink, proto::Finished{rid, std::move(r)});
}

RunResult Lease::base_result() {
  auto now = Clock::now();
  RunResult r;
  r.language = spec_.language;
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
  auto u = vm_ ? vm_->usage() : ProcessUsage{};
  r.cpu_time_ms = u.cpu_ms > cpu_at_start_ ? u.cpu_ms - cpu_at_start_ : 0;
  r.memory_peak_mb = (u.peak_rss_kb + 1023) / 1024;
  r.warm_pool_hit = warm_;
  r.accelerator = host_.lease_config().accelerator;
  r.vm_start = vm_start_;
  if (spec_.layer) r.layer = spec_.layer->use();
  if (vm_) {
    r.exposed_ports = vm_->exposed_ports();
    r.network = vm_->take_network_stats();
  }
  return r;
}

void Lease::succeed(RunResult r) {
  if (!accept(Event::job_done)) return;
  log_info(name() + (is_session() ? " exec" : "") + " uid=" + std::to_string(caller_.uid) +
           " language=" + std::string(language_name(spec_.language)) + " exit=" + std::to_string(r.exit_code) +
           " timed_out=" + (r.timed_out ? "1" : "0") + " warm=" + (warm_ ? "1" : "0") +
           " boot_ms=" + std::to_string(r.timing.boot_ms) + " startup_ms=" + std::to_string(r.timing.startup_ms) +
           " total_ms=" + std::to_string(r.timing.total_ms) + " accel=" + r.accelerator +
           (current_cancelled_ ? " (caller gone)" : ""));
  record_result(r);
  auto sink = current_cancelled_ ? std::weak_ptr<Sink>() : current_->sink;
  uint64_t rid = current_->request_id;
  ++exec_count_;
  if (is_session())
    job_finished();
  else
    end();
  deliver(sink, proto::Finished{rid, std::move(r)});
}

void Lease::job_finished() {
  uv_timer_stop(timer_.get());
  current_.reset();
  state_ = State::idle;
  arm_idle();
  host_.poke();
}

void Lease::cancel_job(uint64_t token) {
  for (auto it = jobs_.begin(); it != jobs_.end(); ++it)
    if (it->token == token) {
      jobs_.erase(it);
      return;
    }
  if (!current_ || current_->token != token || state_ != State::busy) return;
  current_cancelled_ = true;
  bool exec = std::holds_alternative<proto::SessionExec>(current_->request) ||
              std::holds_alternative<proto::Run>(current_->request);
  // The guest stops it as at its timeout; its result then frees the VM.
  if (exec && vm_) (void)vm_->send(proto::Cancel{agent_seq_});
}

void Lease::cancel() {
  if (!accept(Event::cancel)) return;
  log_info(name() + " cancelled: caller went away");
  auto e = audit_entry(is_session() ? AuditKind::session_open : AuditKind::run, is_session() ? "session_create" : "run");
  e.result = "cancelled";
  e.numbers = {{"TOTAL_MS", ms_between(accepted_, Clock::now())}};
  audit(e);
  end();
}

void Lease::close(const std::string& why) {
  if (!accept(Event::close)) return;
  log_info(name() + " uid=" + std::to_string(caller_.uid) + " closed: " + why + " (" + std::to_string(exec_count_) +
           " execs)");
  closed_reason_ = why;
  end();
}

void Lease::fail(Error e) {
  if (state_ == State::finished) return;
  log_info(name() + " uid=" + std::to_string(caller_.uid) + " failed: " + e.describe().substr(0, 500));
  if (state_ == State::busy || state_ == State::idle) {
    // A session whose VM is gone: the job in progress hears why, the rest
    // hear that the session is closed.
    closed_reason_ = "its VM stopped (" + e.message.substr(0, 200) + ")";
    if (current_ && is_session()) {
      e.code = e.code == ErrorCode::timeout ? e.code : ErrorCode::session_closed;
      e.message = "the session's VM stopped: " + e.message;
    }
  }
  record_error(e);
  auto sink = current_ ? current_->sink : sink_;
  uint64_t rid = current_ ? current_->request_id : request_id_;
  if (current_cancelled_) sink.reset();
  end();
  deliver(sink, proto::ErrorReply{rid, e.code, e.message});
}

void Lease::end() {
  if (is_session() && opened_) {
    opened_ = false;
    host_.metrics().session_closed();
    auto e = audit_entry(AuditKind::session_close, "session_close");
    e.result = "closed";
    e.reason = closed_reason_;
    e.numbers = {{"EXECS", exec_count_}, {"AGE_MS", ms_between(accepted_, Clock::now())}};
    audit(e);
  }
  state_ = State::finished;
  if (timer_) uv_timer_stop(timer_.get());
  if (idle_) uv_timer_stop(idle_.get());
  if (vm_) host_.release_vm(std::move(vm_));
  current_.reset();
  // A session's waiting jobs hear that there is no session any more (a
  // run's one job is the run: its caller hears from fail or succeed).
  auto waiting = std::exchange(jobs_, {});
  std::string why = closed_reason_.empty() ? "it was closed" : closed_reason_;
  if (is_session())
    for (auto& j : waiting)
      deliver(j.sink, proto::ErrorReply{j.request_id, ErrorCode::session_closed, "the session closed: " + why});
  host_.lease_ended(*this);
}

AuditEntry Lease::audit_entry(AuditKind kind, std::string_view request) const {
  AuditEntry e;
  e.kind = kind;
  e.uid = caller_.uid;
  e.request = std::string(request);
  e.language = spec_.language;
  e.vm = vm_name_;
  e.vm_start = vm_start_;
  e.session = spec_.session;
  if (current_) e.path = path_of(current_->request);
  return e;
}

void Lease::record_result(const RunResult& r) {
  host_.metrics().finished(is_session(), r);
  auto e = audit_entry(is_session() ? AuditKind::session_exec : AuditKind::run, is_session() ? "session_exec" : "run");
  e.result = current_cancelled_ ? "cancelled" : std::string(run_outcome_name(run_outcome_of(r)));
  e.exit_code = r.exit_code;
  e.signal = r.signal;
  e.numbers = {{"QUEUE_MS", r.timing.setup_ms},
               {"BOOT_MS", r.timing.boot_ms},
               {"STARTUP_MS", r.timing.startup_ms},
               {"EXECUTE_MS", r.execution_time_ms},
               {"TOTAL_MS", r.timing.total_ms},
               {"CPU_MS", r.cpu_time_ms},
               {"MEMORY_PEAK_MB", r.memory_peak_mb},
               {"STDOUT_BYTES", r.stdout_data.size()},
               {"STDERR_BYTES", r.stderr_data.size()}};
  audit(e);
}

void Lease::record_error(const Error& err) {
  auto& m = host_.metrics();
  m.error(err.code);
  AuditKind kind = is_session() ? AuditKind::session_open : AuditKind::run;
  std::string_view request = is_session() ? "session_create" : "run";
  if (current_) std::tie(kind, request) = job_kind(current_->request);
  if (kind == AuditKind::run || kind == AuditKind::session_exec) m.failed(is_session());
  auto e = audit_entry(kind, request);
  e.result = "error";
  e.error = err.code;
  e.numbers = {{"TOTAL_MS", ms_between(current_ ? current_->accepted : accepted_, Clock::now())}};
  audit(e);
}

}  // namespace sandbox::daemon
