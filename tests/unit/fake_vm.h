// A VM that needs no QEMU, for testing the core (leases, pool, scheduler,
// sessions, service) in memory: the test decides when it boots, what a job
// answers and when it dies, or lets it answer by itself.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/fleet.h"
#include "daemon/lease.h"
#include "daemon/uv_util.h"
#include "test_loop.h"

namespace sandbox::test {

class FakeVm : public daemon::VmHandle {
 public:
  FakeVm(daemon::VmEvents events, daemon::VmShape shape, bool restored, int* alive)
      : events_(std::move(events)), shape_(shape), restored_(restored), alive_(alive) {
    ++*alive_;
    started_ = Clock::now();
  }
  ~FakeVm() override { --*alive_; }
  std::weak_ptr<bool> token() const { return token_; }

  // The test's controls.
  void boot() {
    state_ = State::ready;
    ready_ = Clock::now();
    if (auto cb = events_.ready) cb();
  }
  void die(Error e) {
    state_ = State::failed;
    if (auto cb = events_.failed) cb(std::move(e));
  }
  void output(Stream s, std::string data) {
    if (auto cb = events_.output) cb(proto::Output{job_, s, std::move(data)});
  }
  void finish(int32_t exit_code, uint64_t startup_ms = 0) {
    state_ = State::ready;
    if (auto cb = events_.done) cb(proto::ExecDone{job_, exit_code, 0, false, startup_ms, 1, false, false, false});
  }
  void answer_file(proto::Message m) {
    if (!std::holds_alternative<proto::FileChunk>(m)) state_ = State::ready;
    if (auto cb = events_.file) cb(std::move(m));
  }

  const std::vector<proto::Message>& frames() const { return frames_; }
  const std::vector<proto::Message>& sent() const { return sent_; }
  const daemon::VmShape& shape() const { return shape_; }
  uint64_t job() const { return job_; }
  // Answer every exec at once with its code's exit status 0 and "ok\n".
  bool auto_answer = false;

  // VmHandle
  State state() const override { return state_; }
  void set_events(daemon::VmEvents events) override { events_ = std::move(events); }
  Result<void> start_job(uint64_t id, const std::vector<proto::Message>& frames) override {
    if (state_ != State::ready) return Error::make(ErrorCode::internal, "job in state " + std::to_string(int(state_)));
    job_ = id;
    state_ = State::busy;
    frames_.insert(frames_.end(), frames.begin(), frames.end());
    return ok();
  }
  Result<void> send(const proto::Message& m) override {
    if (state_ != State::busy) return Error::make(ErrorCode::internal, "send when not busy");
    sent_.push_back(m);
    return ok();
  }
  Result<void> ping(uint64_t seq) override {
    if (state_ != State::ready) return Error::make(ErrorCode::internal, "ping when not ready");
    if (auto cb = events_.pong) cb(seq);
    return ok();
  }
  void snapshot(std::function<void(Result<void>)> done) override { done(ok()); }
  bool restored() const override { return restored_; }
  std::optional<Language> prestarted() const override { return shape_.prestart; }
  Clock::time_point started_at() const override { return started_; }
  Clock::time_point ready_at() const override { return ready_; }
  ProcessUsage usage() const override { return {}; }
  // Network: policies are recorded; the guest's acknowledgement is the
  // test's to give (ack_network), or at once with auto_network.
  Result<void> configure_network(const NetPolicy& policy, std::string, std::function<void(Result<void>)> done) override {
    if (state_ != State::ready && state_ != State::busy) return Error::make(ErrorCode::internal, "network when not up");
    policies.push_back(policy);
    pending_network_ = std::move(done);
    if (auto_network) ack_network();
    return ok();
  }
  void ack_network(Result<void> r = ok()) {
    if (auto d = std::exchange(pending_network_, {})) d(std::move(r));
  }
  bool network_pending() const { return bool(pending_network_); }
  std::vector<ExposedPort> exposed_ports() const override {
    std::vector<ExposedPort> out;
    if (!policies.empty())
      for (const auto& m : policies.back().expose) out.push_back({m.internal, 40000 + m.internal, "127.0.0.1", "fake"});
    return out;
  }
  std::vector<NetPolicy> policies;
  bool auto_network = false;

 private:
  std::function<void(Result<void>)> pending_network_;
  daemon::VmEvents events_;
  daemon::VmShape shape_;
  bool restored_;
  int* alive_;
  std::shared_ptr<bool> token_ = std::make_shared<bool>(true);
  State state_ = State::booting;
  uint64_t job_ = 0;
  std::vector<proto::Message> frames_, sent_;
  Clock::time_point started_, ready_;
};

// Starts FakeVms; by default each boots on the next loop turn.
class FakeFactory : public daemon::VmFactory {
 public:
  explicit FakeFactory(uv_loop_t* loop) : later_(loop) {}
  Result<std::unique_ptr<daemon::VmHandle>> start(daemon::VmLaunch launch, daemon::VmEvents events) override {
    ++starts;
    if (fail_starts > 0) {
      --fail_starts;
      return Error::make(ErrorCode::vm_boot_failed, "the fake refuses to start");
    }
    auto vm = std::make_unique<FakeVm>(std::move(events), launch.shape, launch.restore.has_value(), &alive);
    FakeVm* raw = vm.get();
    auto token = raw->token();
    vms_.push_back({raw, token});
    if (auto_boot)
      later_.post([raw, token] {
        if (!token.expired() && raw->state() == daemon::VmHandle::State::booting) raw->boot();
      });
    return std::unique_ptr<daemon::VmHandle>(std::move(vm));
  }
  // The i-th VM started, or null once the core has destroyed it.
  FakeVm* vm(size_t i) const { return i < vms_.size() && !vms_[i].live.expired() ? vms_[i].vm : nullptr; }
  FakeVm* last() const { return vms_.empty() ? nullptr : vm(vms_.size() - 1); }
  // Live VMs of a state.
  std::vector<FakeVm*> in_state(daemon::VmHandle::State s) const {
    std::vector<FakeVm*> out;
    for (size_t i = 0; i < vms_.size(); ++i)
      if (auto* v = vm(i); v && v->state() == s) out.push_back(v);
    return out;
  }

  int alive = 0;
  int starts = 0;
  int fail_starts = 0;
  bool auto_boot = true;

 private:
  struct Entry {
    FakeVm* vm;
    std::weak_ptr<bool> live;
  };
  std::vector<Entry> vms_;
  daemon::Deferred later_;
};

// The first VM running a job, once there is one (null after a few seconds).
FakeVm* wait_busy(Loop& loop, const FakeFactory& factory);

// Collects what a request's sink receives.
struct Collect : daemon::Sink {
  std::vector<proto::Message> got;
  void deliver(proto::Message&& m) override { got.push_back(std::move(m)); }
  template <class T>
  const T* last() const {
    for (auto it = got.rbegin(); it != got.rend(); ++it)
      if (auto* v = std::get_if<T>(&*it)) return v;
    return nullptr;
  }
  bool finished() const {
    for (const auto& m : got)
      if (!std::holds_alternative<proto::Output>(m) && !std::holds_alternative<proto::FileChunk>(m)) return true;
    return false;
  }
};

inline FakeVm* wait_busy(Loop& loop, const FakeFactory& factory) {
  FakeVm* vm = nullptr;
  loop.until([&] {
    auto busy = factory.in_state(daemon::VmHandle::State::busy);
    vm = busy.empty() ? nullptr : busy.front();
    return vm != nullptr;
  });
  return vm;
}

}  // namespace sandbox::test
