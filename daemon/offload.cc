#include "daemon/offload.h"

#include <system_error>

namespace sandbox::daemon {

Offload::Offload(uv_loop_t* loop, size_t threads) {
  async_ = UvHandle<uv_async_t>::make(this, [&](uv_async_t* a) {
    return uv_async_init(loop, a, [](uv_async_t* h) {
      if (auto* self = owner_of<Offload>(h)) self->deliver();
    });
  });
  threads_wanted_ = async_ ? threads : 0;
  if (async_) uv_unref(reinterpret_cast<uv_handle_t*>(async_.get()));
}

Offload::~Offload() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    jobs_.clear();
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
  async_.reset();
}

bool Offload::post(Job job) {
  // Started at first use, not construction: capabilities are per thread,
  // and the daemon drops its own after the core is built.
  try {
    while (threads_.size() < threads_wanted_) threads_.emplace_back([this] { work(); });
  } catch (const std::system_error&) {
    threads_wanted_ = threads_.size();  // what started serves; none: the caller does the job itself
  }
  if (threads_.empty()) return false;
  if (pending_++ == 0) uv_ref(reinterpret_cast<uv_handle_t*>(async_.get()));
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

void Offload::work() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    auto answer = job(stop_);
    {
      std::lock_guard lock(mu_);
      if (stop_) return;
      done_.push_back(std::move(answer));
    }
    uv_async_send(async_.get());
  }
}

void Offload::deliver() {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(mu_);
    ready.swap(done_);
  }
  for (auto& fn : ready) {
    if (--pending_ == 0) uv_unref(reinterpret_cast<uv_handle_t*>(async_.get()));
    if (fn) fn();
  }
}

}  // namespace sandbox::daemon
