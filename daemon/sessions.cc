#include "daemon/sessions.h"

#include <sys/random.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "common/io.h"

namespace sandbox::daemon {

Result<std::string> SessionRegistry::new_id() {
  char raw[12];
  if (::getrandom(raw, sizeof raw, 0) != sizeof raw) return Error::sys("getrandom");
  return "s-" + to_hex({raw, sizeof raw});
}

size_t SessionRegistry::open_journal(std::string path) {
  journal_ = std::move(path);
  // "ID UID" lines, as save() writes them; anything else is skipped. The
  // file is the daemon's own, bounded by the open sessions it had.
  std::ifstream in(journal_);
  size_t earlier = 0;
  std::string id;
  uid_t owner = 0;
  while (earlier < kClosedKept && in >> id >> owner)
    if (id.size() <= 64 && id.starts_with("s-")) {
      remember_closed(id, owner, "sandboxd restarted; the session's VM is gone");
      ++earlier;
    }
  save();
  return earlier;
}

void SessionRegistry::save() const {
  if (journal_.empty() || journal_frozen_) return;
  // Nothing open, nothing for a successor: no file.
  if (open_.empty()) {
    ::unlink(journal_.c_str());
    return;
  }
  std::string text;
  for (const auto& [id, s] : open_) text += id + " " + std::to_string(s.owner) + "\n";
  // Best effort: a journal that cannot be written costs only the clearer
  // answer after a restart.
  std::string tmp = journal_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!(out << text << std::flush)) return;
  }
  ::rename(tmp.c_str(), journal_.c_str());
}

void SessionRegistry::add(const std::string& id, LeaseId lease, uid_t owner) {
  open_[id] = {lease, owner};
  save();
}

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
  uid_t owner = it->second.owner;
  open_.erase(it);
  remember_closed(id, owner, std::move(why));
  save();
}

void SessionRegistry::remember_closed(const std::string& id, uid_t owner, std::string why) {
  closed_[id] = {owner, std::move(why)};
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
