#include "daemon/budget.h"

namespace sandbox::daemon {

Result<void> ByteBudget::Hold::grow(uint64_t bytes) {
  if (!budget_) return Error::make(ErrorCode::internal, "no budget");
  if (auto r = budget_->take(uid_, bytes); !r) return r;
  bytes_ += bytes;
  return ok();
}

void ByteBudget::Hold::shrink(uint64_t bytes) {
  bytes = std::min(bytes, bytes_);
  if (budget_) budget_->give(uid_, bytes);
  bytes_ -= bytes;
}

void ByteBudget::Hold::reset() {
  if (budget_ && bytes_) budget_->give(uid_, bytes_);
  bytes_ = 0;
}

Result<void> ByteBudget::take(uid_t uid, uint64_t bytes) {
  uint64_t mine = used_by(uid);
  if (mine + bytes > per_uid_)
    return Error::make(ErrorCode::capacity, "uid " + std::to_string(uid) + " already has " + std::to_string(mine >> 20) +
                                                " MiB of " + what_ + " in the daemon (the per-user limit is " +
                                                std::to_string(per_uid_ >> 20) + " MiB)");
  if (used_ + bytes > total_)
    return Error::make(ErrorCode::capacity, "the daemon holds " + std::to_string(used_ >> 20) + " MiB of " + what_ +
                                                " (its limit is " + std::to_string(total_ >> 20) + " MiB); try again later");
  used_ += bytes;
  by_uid_[uid] += bytes;
  return ok();
}

void ByteBudget::give(uid_t uid, uint64_t bytes) {
  used_ -= std::min(used_, bytes);
  if (auto it = by_uid_.find(uid); it != by_uid_.end()) {
    it->second -= std::min(it->second, bytes);
    if (it->second == 0) by_uid_.erase(it);
  }
}

uint64_t ByteBudget::used_by(uid_t uid) const {
  auto it = by_uid_.find(uid);
  return it == by_uid_.end() ? 0 : it->second;
}

}  // namespace sandbox::daemon
