// Ownership of libuv handles from C++ objects. A handle is heap-allocated,
// closed when its owner goes away and freed in the close callback; its
// `data` is cleared first so no callback reaches a destroyed owner.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <sandbox/result.h>

namespace sandbox::daemon {

template <class H>
class UvHandle {
 public:
  UvHandle() = default;
  // `init` is uv_timer_init, uv_pipe_init-with-bound-args etc.; returns 0 on success.
  template <class Init>
  static UvHandle make(void* owner, Init&& init) {
    UvHandle h;
    auto* raw = new H{};
    if (init(raw) != 0) {
      delete raw;
      return h;
    }
    raw->data = owner;
    h.h_ = raw;
    return h;
  }
  UvHandle(UvHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UvHandle& operator=(UvHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;
  ~UvHandle() { reset(); }

  H* get() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }
  void reset() {
    if (!h_) return;
    h_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(h_), [](uv_handle_t* h) { delete reinterpret_cast<H*>(h); });
    h_ = nullptr;
  }

 private:
  H* h_ = nullptr;
};

// The owner of a handle's callback, or nullptr once the owner is gone.
template <class T, class H>
T* owner_of(H* handle) {
  return static_cast<T*>(handle->data);
}

// Writes `data` to a stream; the buffer lives until libuv is done with it,
// then `done` (if any) hears how many bytes went and the status.
inline int uv_write_string(uv_stream_t* stream, std::string data,
                           std::function<void(size_t bytes, int status)> done = {}) {
  struct Req {
    uv_write_t req;
    std::string data;
    std::function<void(size_t, int)> done;
  };
  auto* r = new Req{{}, std::move(data), std::move(done)};
  r->req.data = r;
  uv_buf_t buf = uv_buf_init(r->data.data(), static_cast<unsigned>(r->data.size()));
  int rc = uv_write(&r->req, stream, &buf, 1, [](uv_write_t* req, int status) {
    std::unique_ptr<Req> owned(static_cast<Req*>(req->data));
    if (owned->done) owned->done(owned->data.size(), status);
  });
  if (rc != 0) delete r;
  return rc;
}

// Shuts the write side down once queued writes are done, then runs `done`.
inline int uv_shutdown_then(uv_stream_t* stream, std::function<void()> done) {
  struct Req {
    uv_shutdown_t req;
    std::function<void()> done;
  };
  auto* r = new Req{{}, std::move(done)};
  r->req.data = r;
  int rc = uv_shutdown(&r->req, stream, [](uv_shutdown_t* req, int) {
    std::unique_ptr<Req> owned(static_cast<Req*>(req->data));
    if (owned->done) owned->done();
  });
  if (rc != 0) delete r;
  return rc;
}

inline Error uv_error(std::string_view op, int rc) {
  return Error::make(ErrorCode::internal, std::string(op) + ": " + uv_strerror(rc));
}

// Runs functions on a later loop turn, in the order posted: for what must
// not happen inside the callback that asks for it (destroying the object
// the callback belongs to, starting work its caller has not recorded yet).
class Deferred {
 public:
  explicit Deferred(uv_loop_t* loop)
      : timer_(UvHandle<uv_timer_t>::make(this, [&](uv_timer_t* t) { return uv_timer_init(loop, t); })) {}
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;

  void post(std::function<void()> fn) {
    queue_.push_back(std::move(fn));
    if (timer_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(timer_.get())))
      uv_timer_start(timer_.get(), [](uv_timer_t* t) {
        if (auto* self = owner_of<Deferred>(t)) self->run();
      }, 0, 0);
  }
  // Runs what is queued now (shutdown, tests).
  void run() {
    while (!queue_.empty()) {
      auto batch = std::exchange(queue_, {});
      for (auto& fn : batch) fn();
    }
  }

 private:
  UvHandle<uv_timer_t> timer_;
  std::vector<std::function<void()>> queue_;
};

// Standard allocation callback for uv_read_start.
inline void uv_alloc_buffer(uv_handle_t*, size_t suggested, uv_buf_t* buf) {
  buf->base = new char[suggested];
  buf->len = suggested;
}

}  // namespace sandbox::daemon
