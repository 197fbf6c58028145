#include "daemon/scheduler.h"

#include <algorithm>

namespace sandbox::daemon {

Result<void> Scheduler::reserve(uid_t uid, Kind kind) {
  auto& counts = kind == Kind::run ? runs_ : sessions_;
  uint32_t cap = kind == Kind::run ? limits_.runs_per_uid : limits_.sessions_per_uid;
  uint32_t& n = counts[uid];
  if (n >= cap) {
    if (n == 0) counts.erase(uid);
    return Error::make(ErrorCode::capacity, "uid " + std::to_string(uid) + " already has " + std::to_string(n) +
                                                (kind == Kind::run ? " runs in flight" : " sessions open") +
                                                " (the per-user limit)");
  }
  ++n;
  return ok();
}

void Scheduler::release(uid_t uid, Kind kind) {
  auto& counts = kind == Kind::run ? runs_ : sessions_;
  if (auto it = counts.find(uid); it != counts.end() && --it->second == 0) counts.erase(it);
}

uint32_t Scheduler::held(uid_t uid, Kind kind) const {
  const auto& counts = kind == Kind::run ? runs_ : sessions_;
  auto it = counts.find(uid);
  return it == counts.end() ? 0 : it->second;
}

void Scheduler::remove(LeaseId id) { std::erase(queue_, id); }

void Scheduler::pump(const std::function<bool(LeaseId)>& start) {
  while (!queue_.empty()) {
    LeaseId id = queue_.front();
    if (!start(id)) return;
    // `start` may have removed it already (a lease that failed at once).
    if (!queue_.empty() && queue_.front() == id) queue_.pop_front();
  }
}

}  // namespace sandbox::daemon
