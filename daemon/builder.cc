#include "daemon/builder.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

#include <sandbox/json.h>

#include "common/net_rules.h"
#include "common/packages.h"
#include "common/unique_fd.h"
#include "daemon/lease.h"
#include "daemon/log.h"
#include "daemon/uv_util.h"

namespace sandbox::daemon {

extern const char* const kBuilderScript;

namespace {

// How often a build waiting for a VM slot looks again.
constexpr uint64_t kRoomRetryMs = 250;
// Past the guest's own timeout, the host stops waiting (a guest that
// cannot end its installer is not trusted to report).
constexpr std::chrono::milliseconds kHostSlack{10'000};
// The answer (lock lines and the size) is small; the installer's log is
// only kept for its last lines.
constexpr uint64_t kMaxAnswerBytes = 1 << 20;
constexpr size_t kLogTailBytes = 3000;
// npm runs V8 and a thread pool, pip a few threads: well above a script's
// usual need, still bounded.
constexpr uint32_t kBuilderPids = 512;

std::string last_lines(const std::string& log) {
  std::string tail = log.size() > kLogTailBytes ? log.substr(log.size() - kLogTailBytes) : log;
  if (log.size() > kLogTailBytes)
    if (auto nl = tail.find('\n'); nl != std::string::npos) tail.erase(0, nl + 1);
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  return tail.empty() ? "(the installer printed nothing)" : tail;
}

}  // namespace

Result<std::string> index_host_entry(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return Error::make(ErrorCode::invalid_argument, "index URL '" + std::string(url) + "': " + std::string(why));
  };
  size_t scheme = url.starts_with("https://") ? 8 : url.starts_with("http://") ? 7 : 0;
  if (!scheme) return bad("not an http(s) URL");
  auto rest = url.substr(scheme);
  auto authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return bad("no host, or user information");
  // Validated as an allowlist entry by make_policy, like a request's.
  NetworkRequest probe{true, {std::string(authority)}, {}};
  if (auto p = make_policy(probe); !p) return bad(p.error().message);
  return std::string(authority);
}

// One build: a scratch disk, a slot, a builder VM, its script, its answer.
class Builder::Job {
 public:
  Job(Builder& owner, uint64_t id, LayerKeyInputs inputs, std::string image_path, Done done)
      : owner_(owner),
        id_(id),
        inputs_(std::move(inputs)),
        image_path_(std::move(image_path)),
        // Beside the image, named so that start-up recovery removes it too.
        path_(image_path_ + "-scratch.tmp"),
        done_(std::move(done)) {}

  ~Job() {
    if (vm_) owner_.fleet_.release(std::move(vm_));
    ::unlink(path_.c_str());
  }

  void start() {
    timer_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(owner_.loop_, t); });
    retry_ = UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(owner_.loop_, t); });
    if (!timer_ || !retry_) return fail(Error::make(ErrorCode::internal, "cannot create the builder's timers"));
    if (!owner_.options_.available)
      return fail(Error::make(ErrorCode::package_install_failed,
                              "this sandboxd has no package builder image (images/build.sh makes builder.erofs)"));
    // Each ecosystem's hosts only when the request has its packages.
    const auto& ps = inputs_.packages;
    bool apt = std::any_of(ps.begin(), ps.end(), [](const auto& p) { return is_apt_package(p); });
    bool language = std::any_of(ps.begin(), ps.end(), [](const auto& p) { return !is_apt_package(p); });
    std::vector<std::string> hosts;
    if (language)
      hosts = inputs_.language == Language::javascript ? owner_.options_.npm_hosts : owner_.options_.python_hosts;
    if (apt) hosts.insert(hosts.end(), owner_.options_.apt_hosts.begin(), owner_.options_.apt_hosts.end());
    auto policy = make_policy(NetworkRequest{true, hosts, {}});
    if (!policy) return fail(std::move(policy).error().context("the builder's index hosts"));
    policy_ = std::move(*policy);
    // Sparse: only what the image takes is ever written.
    scratch_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!scratch_) return fail(Error::sys("open", path_).context("the builder's scratch disk"));
    if (::ftruncate(scratch_.get(), static_cast<off_t>(owner_.options_.scratch_bytes)) != 0)
      return fail(Error::sys("ftruncate", path_).context("the builder's scratch disk"));
    scratch_ro_.reset(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!scratch_ro_) return fail(Error::sys("open", path_).context("the builder's scratch disk"));
    deadline_ = Clock::now() + owner_.options_.timeout;
    uv_timer_start(timer_.get(), [](uv_timer_t* t) {
      if (auto* job = owner_of<Job>(t))
        job->fail(Error::make(ErrorCode::timeout, "the package build did not finish within " +
                                                      std::to_string(job->owner_.options_.timeout.count()) + " ms"));
    }, static_cast<uint64_t>((owner_.options_.timeout + kHostSlack).count()), 0);
    boot();
  }

 private:
  using Clock = std::chrono::steady_clock;

  void boot() {
    if (finished_) return;
    if (!owner_.fleet_.has_room() && !owner_.make_room_()) {
      uv_timer_start(retry_.get(), [](uv_timer_t* t) {
        if (auto* job = owner_of<Job>(t)) job->boot();
      }, kRoomRetryMs, 0);
      return;
    }
    VmLaunch launch;
    launch.shape.memory_mb = owner_.options_.memory_mb;
    launch.shape.builder = true;
    launch.shape.scratch_fd = scratch_.get();
    launch.shape.scratch_ro_fd = scratch_ro_.get();
    VmEvents ev;
    ev.ready = [this] { on_ready(); };
    ev.output = [this](proto::Output&& o) { on_output(std::move(o)); };
    ev.done = [this](proto::ExecDone&& d) { on_done(d); };
    ev.job_error = [this](proto::ErrorReply&& e) {
      fail(Error::make(ErrorCode::package_install_failed, "the builder refused the job: " + e.message));
    };
    ev.failed = [this](Error e) { fail(std::move(e).context("package builder VM")); };
    auto vm = owner_.fleet_.start(std::move(launch), std::move(ev));
    if (!vm) return fail(std::move(vm).error().context("starting the package builder"));
    vm_ = std::move(*vm);
    log_info("layer build " + std::to_string(id_) + ": builder " + vm_->name() + " booting");
  }

  void on_ready() {
    // The relay may answer after this job has ended.
    auto r = vm_->configure_network(policy_, "package builder", [this, alive = std::weak_ptr<bool>(alive_)](Result<void> r) {
      if (alive.expired() || finished_) return;
      if (!r) return fail(std::move(r).error().context("the builder's network"));
      run_script();
    });
    if (!r) fail(std::move(r).error().context("the builder's network"));
  }

  void run_script() {
    if (finished_) return;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    if (left.count() <= 0) return fail(Error::make(ErrorCode::timeout, "the package builder took its whole time to boot"));
    std::string packages;
    for (const auto& p : inputs_.packages) packages += p + "\n";
    if (!packages.empty()) packages.pop_back();
    proto::Exec x;
    x.id = 1;
    x.language = Language::raw;
    x.code = kBuilderScript;
    x.env = {{"SANDBOX_BUILD_LANGUAGE", std::string(language_name(inputs_.language))},
             {"SANDBOX_BUILD_PACKAGES", packages},
             {"SANDBOX_BUILD_INDEX", inputs_.index_url},
             {"SANDBOX_BUILD_SOURCE", inputs_.source_builds ? "1" : "0"},
             {"SANDBOX_BUILD_APT_SOURCES", owner_.options_.apt_sources}};
    // The operator's keyring outgrows an environment variable; in base64
    // it cannot end the assignment it is in.
    if (!owner_.options_.apt_keyring.empty())
      x.code = "SANDBOX_BUILD_APT_KEYRING=" + base64(owner_.options_.apt_keyring) + "\n" + x.code;
    // The installers go through the guest's proxy like any client would.
    for (auto& kv : proxy_env(true)) x.env.push_back(std::move(kv));
    x.timeout_ms = static_cast<uint32_t>(left.count());
    x.startup_timeout_ms = static_cast<uint32_t>(left.count());
    x.grace_ms = 2000;
    x.stdout_limit = kMaxAnswerBytes;
    x.stderr_limit = limits::kMaxStderrBytes;
    x.pids_max = kBuilderPids;
    if (auto r = vm_->start_job(x.id, {x}); !r) return fail(std::move(r).error());
    log_info("layer build " + std::to_string(id_) + ": installing " + std::to_string(inputs_.packages.size()) +
             " packages for " + std::string(language_name(inputs_.language)));
  }

  void on_output(proto::Output&& o) {
    if (o.stream == Stream::out) {
      // Past the bound the answer is not trusted at all, not spliced.
      if (answer_.size() + o.data.size() > kMaxAnswerBytes) answer_overflow_ = true;
      if (!answer_overflow_) answer_ += o.data;
      return;
    }
    log_ += o.data;
    // Only the tail is ever shown: keep a little more than that.
    if (log_.size() > 4 * kLogTailBytes) log_.erase(0, log_.size() - 2 * kLogTailBytes);
  }

  void on_done(const proto::ExecDone& d) {
    if (d.timed_out)
      return fail(Error::make(ErrorCode::timeout, "the package build did not finish within " +
                                                      std::to_string(owner_.options_.timeout.count()) + " ms; " +
                                                      last_lines(log_)));
    if (d.exit_code != 0 || d.signal != 0)
      return fail(Error::make(ErrorCode::package_install_failed,
                              (d.signal ? "the installer was killed by signal " + std::to_string(d.signal)
                                        : "the installer failed (exit " + std::to_string(d.exit_code) + ")") +
                                  ": " + last_lines(log_)));
    if (answer_overflow_)
      return fail(Error::make(ErrorCode::package_install_failed, "the builder's answer is larger than the host reads"));
    // The answer: "lock ..." lines, then "image_bytes N".
    std::string lock;
    uint64_t bytes = 0;
    size_t pos = 0;
    while (pos < answer_.size()) {
      auto nl = answer_.find('\n', pos);
      std::string_view line(answer_.data() + pos, (nl == std::string::npos ? answer_.size() : nl) - pos);
      pos = nl == std::string::npos ? answer_.size() : nl + 1;
      if (line.starts_with("lock ")) {
        lock.append(line.substr(5)).push_back('\n');
      } else if (line.starts_with("image_bytes ")) {
        auto n = line.substr(12);
        auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), bytes);
        if (ec != std::errc() || end != n.data() + n.size()) bytes = 0;
      }
    }
    if (bytes == 0 || bytes > owner_.options_.scratch_bytes || bytes % 512 != 0)
      return fail(Error::make(ErrorCode::package_install_failed, "the builder reported no usable image size"));
    copy_image(bytes, std::move(lock));
  }

  // The image is the scratch disk's first `bytes`, copied into a file of
  // the host's own: QEMU, still alive until a later loop turn, holds the
  // scratch disk open, never this one. The layer store hashes the copy,
  // and every attach checks that hash. Up to scratch_bytes: copied on the
  // Builder's own thread, between descriptors opened here.
  void copy_image(uint64_t bytes, std::string lock) {
    auto from = std::make_shared<unique_fd>(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!*from) return fail(Error::sys("open", path_).context("the layer image"));
    auto to = std::make_shared<unique_fd>(
        ::open(image_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!*to) return fail(Error::sys("create", image_path_).context("the layer image"));
    auto copy = [from, to, bytes, where = image_path_](const std::atomic<bool>* stop) -> Result<void> {
      for (uint64_t done = 0; done < bytes;) {
        if (stop && *stop) return Error::make(ErrorCode::internal, "stopped");
        // A chunk at a time, so that a stop is seen between them.
        size_t chunk = static_cast<size_t>(std::min<uint64_t>(bytes - done, uint64_t{64} << 20));
        ssize_t n = ::copy_file_range(from->get(), nullptr, to->get(), nullptr, chunk, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::sys("copy_file_range", where);
        if (n == 0) return Error::make(ErrorCode::package_install_failed, "the scratch disk ended before the image did");
        done += static_cast<uint64_t>(n);
      }
      return ok();
    };
    // The job may have ended meanwhile (its deadline): then nobody hears.
    auto then = [this, alive = std::weak_ptr<bool>(alive_), lock = std::move(lock)](Result<void> r) {
      if (alive.expired()) return;
      if (!r) return fail(std::move(r).error().context("the layer image"));
      succeed(lock);
    };
    bool posted = owner_.copier_.post([copy, then](const std::atomic<bool>& stop) -> std::function<void()> {
      auto r = std::make_shared<Result<void>>(copy(&stop));
      return [then, r] { then(std::move(*r)); };
    });
    if (!posted) then(copy(nullptr));
  }

  void fail(Error e) {
    if (finished_) return;
    log_warning("layer build " + std::to_string(id_) + " failed: " + e.message);
    end(std::move(e));
  }

  void succeed(std::string lock) {
    if (finished_) return;
    log_info("layer build " + std::to_string(id_) + " done");
    end(std::move(lock));
  }

  void end(Result<std::string> outcome) {
    finished_ = true;
    if (timer_) uv_timer_stop(timer_.get());
    if (retry_) uv_timer_stop(retry_.get());
    // The VM goes before the answer: the layer's readers boot VMs of
    // their own, and the slot is theirs.
    if (vm_) owner_.fleet_.release(std::move(vm_));
    scratch_.reset();
    scratch_ro_.reset();
    ::unlink(path_.c_str());
    alive_.reset();
    auto done = std::move(done_);
    owner_.finish(id_);
    if (done) done(std::move(outcome));
  }

  Builder& owner_;
  uint64_t id_;
  LayerKeyInputs inputs_;
  std::string image_path_, path_;  // the layer image; the scratch disk
  Done done_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  NetPolicy policy_;
  unique_fd scratch_, scratch_ro_;
  std::unique_ptr<VmHandle> vm_;
  UvHandle<uv_timer_t> timer_, retry_;
  Clock::time_point deadline_;
  std::string answer_, log_;
  bool answer_overflow_ = false;
  bool finished_ = false;
};

Builder::Builder(uv_loop_t* loop, Fleet& fleet, std::function<bool()> make_room, BuilderOptions options)
    : loop_(loop),
      fleet_(fleet),
      make_room_(std::move(make_room)),
      options_(std::move(options)),
      later_(loop),
      copier_(loop, 1) {}

Builder::~Builder() {
  // Nobody waits any more: the jobs go without answers, and starts still
  // posted find nothing.
  jobs_.clear();
  later_.run();
}

void Builder::build(const LayerKeyInputs& inputs, const std::string& image_path, Done done) {
  uint64_t id = next_id_++;
  jobs_.emplace(id, std::make_unique<Job>(*this, id, inputs, image_path, std::move(done)));
  // Started from the loop: LayerCache records the build before any answer.
  later_.post([this, id] {
    if (auto it = jobs_.find(id); it != jobs_.end() && it->second) it->second->start();
  });
}

void Builder::finish(uint64_t id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  // Destroyed on a later loop turn: we are inside one of its calls.
  std::shared_ptr<Job> dead(std::move(it->second));
  jobs_.erase(it);
  later_.post([dead]() mutable { dead.reset(); });
}

}  // namespace sandbox::daemon
