// A libuv loop for a unit test, closed with every handle left on it.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <thread>

namespace sandbox::test {

class Loop {
 public:
  Loop() { uv_loop_init(&loop_); }
  ~Loop() {
    for (int i = 0; i < 10 && uv_loop_alive(&loop_); ++i) uv_run(&loop_, UV_RUN_NOWAIT);
    uv_walk(&loop_, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h)) uv_close(h, nullptr);
    }, nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
  uv_loop_t* get() { return &loop_; }
  // Runs until `done` holds; false on timeout.
  bool until(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > end) return false;
      uv_run(&loop_, UV_RUN_NOWAIT);
      if (!done()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }
  // Runs until nothing keeps the loop alive: every answer of a job out
  // on another thread (an Offload's) has run. False on timeout.
  bool drain(std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    return until([&] { return !uv_loop_alive(&loop_); }, limit);
  }
  // Runs what is due now, a few turns.
  void settle() {
    for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  }

 private:
  uv_loop_t loop_;
};

}  // namespace sandbox::test
