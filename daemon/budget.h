// Bytes held for clients (uploads waiting for their session, frames being
// received, replies not yet read), bounded per uid and in all, so that no
// local user can exhaust the daemon's memory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <sandbox/result.h>

namespace sandbox::daemon {

class ByteBudget {
 public:
  ByteBudget(uint64_t per_uid, uint64_t total, std::string what)
      : per_uid_(per_uid), total_(total), what_(std::move(what)) {}
  ByteBudget(const ByteBudget&) = delete;
  ByteBudget& operator=(const ByteBudget&) = delete;

  // A share of the budget, given back when the Hold goes.
  class Hold {
   public:
    Hold() = default;
    Hold(Hold&& o) noexcept : budget_(std::exchange(o.budget_, nullptr)), uid_(o.uid_), bytes_(std::exchange(o.bytes_, 0)) {}
    Hold& operator=(Hold&& o) noexcept {
      if (this != &o) {
        reset();
        budget_ = std::exchange(o.budget_, nullptr);
        uid_ = o.uid_;
        bytes_ = std::exchange(o.bytes_, 0);
      }
      return *this;
    }
    ~Hold() { reset(); }
    // More of the budget for this hold; `capacity` when it is not there.
    Result<void> grow(uint64_t bytes);
    void shrink(uint64_t bytes);
    uint64_t bytes() const { return bytes_; }
    void reset();

   private:
    friend class ByteBudget;
    Hold(ByteBudget* b, uid_t uid) : budget_(b), uid_(uid) {}
    ByteBudget* budget_ = nullptr;
    uid_t uid_ = 0;
    uint64_t bytes_ = 0;
  };

  Hold open(uid_t uid) { return Hold(this, uid); }
  uint64_t used() const { return used_; }
  uint64_t used_by(uid_t uid) const;

 private:
  Result<void> take(uid_t uid, uint64_t bytes);
  void give(uid_t uid, uint64_t bytes);

  uint64_t per_uid_, total_;
  std::string what_;
  uint64_t used_ = 0;
  std::map<uid_t, uint64_t> by_uid_;
};

}  // namespace sandbox::daemon
