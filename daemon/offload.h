// Blocking work off the event loop (transfers to and from the shared
// cache's object store, writing out a saved snapshot): a few threads of its
// own take jobs in order, and each job's answer runs on the loop. Not
// libuv's thread pool, which the network relay's name look-ups share: a
// slow store must not delay them.
//
// Threads start with the first job (they inherit the capabilities of the
// loop thread at that time). The loop never waits on a job, and an idle
// Offload does not keep it running (a daemon that drains exits); one with
// jobs out does, until their answers have run. Destroying the Offload sets
// `stop` (jobs check it and give up), joins the threads and drops answers
// not yet run.
#pragma once

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/uv_util.h"

namespace sandbox::daemon {

class Offload {
 public:
  // A job runs on a worker and returns what to run on the loop after it.
  using Job = std::function<std::function<void()>(const std::atomic<bool>& stop)>;

  Offload(uv_loop_t* loop, size_t threads);
  ~Offload();
  Offload(const Offload&) = delete;
  Offload& operator=(const Offload&) = delete;

  // False when the job cannot be taken (no worker could start).
  bool post(Job job);
  // Jobs posted whose answers have not run yet.
  size_t pending() const { return pending_; }

 private:
  void work();
  void deliver();

  UvHandle<uv_async_t> async_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;                     // guarded by mu_
  std::vector<std::function<void()>> done_;  // guarded by mu_
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  size_t pending_ = 0;  // the loop's own count
  size_t threads_wanted_ = 0;  // none without the async handle: no answer could come back
};

}  // namespace sandbox::daemon
