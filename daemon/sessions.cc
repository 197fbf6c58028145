#include "daemon/sessions.h"

#include <sys/random.h>

#include "common/io.h"

namespace sandbox::daemon {

Result<std::string> SessionRegistry::new_id() {
  char raw[12];
  if (::getrandom(raw, sizeof raw, 0) != sizeof raw) return Error::sys("getrandom");
  return "s-" + to_hex({raw, sizeof raw});
}

void SessionRegistry::add(const std::string& id, LeaseId lease, uid_t owner) { open_[id] = {lease, owner}; }

Result<LeaseId> SessionRegistry::find(const std::string& id, uid_t owner) const {
  auto not_found = Error::make(ErrorCode::not_found, "no session '" + id.substr(0, 64) + "'");
  if (auto it = open_.find(id); it != open_.end()) {
    if (it->second.owner != owner) return not_found;
    return it->second.lease;
  }
  if (auto c = closed_.find(id); c != closed_.end() && c->second.owner == owner)
    return Error::make(ErrorCode::session_closed, "session '" + id + "' is closed: " + c->second.why);
  return not_found;
}

void SessionRegistry::closed(const std::string& id, std::string why) {
  auto it = open_.find(id);
  if (it == open_.end()) return;
  closed_[id] = {it->second.owner, std::move(why)};
  open_.erase(it);
  closed_order_.push_back(id);
  if (closed_order_.size() > kClosedKept) {
    closed_.erase(closed_order_.front());
    closed_order_.pop_front();
  }
}

std::vector<LeaseId> SessionRegistry::of(uid_t owner) const {
  std::vector<LeaseId> out;
  for (const auto& [id, s] : open_)
    if (s.owner == owner) out.push_back(s.lease);
  return out;
}

}  // namespace sandbox::daemon
