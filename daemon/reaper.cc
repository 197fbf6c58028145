#include "daemon/reaper.h"

#include <signal.h>

#include "daemon/log.h"

namespace sandbox::daemon {
namespace {

// A reaped QEMU's cgroup is normally gone at the first try; the kernel may
// still count an exiting task in it for a moment. A second in all, as the
// waiting Cgroups::remove allows.
constexpr uint64_t kRetryMs = 5;
constexpr int kMaxAttempts = 200;
// A QEMU still there this long after SIGKILL is stuck in the kernel (a
// disk that does not answer, say): worth a line in the log, since its
// memory is not free although its slot is.
constexpr uint64_t kStuckMs = 10'000;

}  // namespace

Reaper::~Reaper() {
  for (auto& [id, d] : dying_) finish_now(d->qemu);
}

void Reaper::finish_now(LaunchedQemu& qemu) const {
  qemu.process.kill_and_wait();
  if (qemu.has_cgroup && cgroups_) cgroups_->remove(qemu.name);
  qemu.has_cgroup = false;
}

void Reaper::reap(LaunchedQemu qemu) {
  auto d = std::make_unique<Dying>();
  d->reaper = this;
  d->id = next_id_++;
  d->qemu = std::move(qemu);
  bool running = d->qemu.process.running();
  if (running) (void)d->qemu.process.signal(SIGKILL);
  d->timer = UvHandle<uv_timer_t>::make(d.get(), [&](uv_timer_t* t) { return uv_timer_init(loop_, t); });
  if (running)
    d->exit = UvHandle<uv_poll_t>::make(d.get(), [&](uv_poll_t* p) {
      return uv_poll_init(loop_, p, d->qemu.process.pidfd());
    });
  if (!d->timer || (running && (!d->exit || uv_poll_start(d->exit.get(), UV_READABLE, [](uv_poll_t* p, int, int) {
                                  if (auto* dying = owner_of<Dying>(p)) dying->reaper->exited(dying->id);
                                }) != 0))) {
    finish_now(d->qemu);  // no handle for it: wait here
    return;
  }
  uint64_t id = d->id;
  Dying& entry = *d;
  dying_.emplace(id, std::move(d));
  if (!running) return remove_cgroup(id);  // reaped already (it died by itself)
  uv_timer_start(entry.timer.get(), [](uv_timer_t* t) {
    if (auto* dying = owner_of<Dying>(t))
      log_warning("QEMU " + dying->qemu.name + " (pid " + std::to_string(dying->qemu.process.pid()) + ") still there " +
                  std::to_string(kStuckMs / 1000) + " s after SIGKILL");
  }, kStuckMs, 0);
}

void Reaper::exited(uint64_t id) {
  auto it = dying_.find(id);
  if (it == dying_.end()) return;
  it->second->exit.reset();
  uv_timer_stop(it->second->timer.get());
  it->second->qemu.process.wait();  // it has exited: no wait
  remove_cgroup(id);
}

void Reaper::remove_cgroup(uint64_t id) {
  auto it = dying_.find(id);
  if (it == dying_.end()) return;
  Dying& d = *it->second;
  if (d.qemu.has_cgroup && cgroups_ && !cgroups_->try_remove(d.qemu.name)) {
    if (++d.attempts < kMaxAttempts) {
      uv_timer_start(d.timer.get(), [](uv_timer_t* t) {
        if (auto* dying = owner_of<Dying>(t)) dying->reaper->remove_cgroup(dying->id);
      }, kRetryMs, 0);
      return;
    }
    log_warning("cgroup of " + d.qemu.name + " still busy after its QEMU was reaped; left for start-up recovery");
  }
  dying_.erase(it);  // closes the handles, then the pidfd, and removes the record
}

}  // namespace sandbox::daemon
