// Session ids and who they belong to. An id is unguessable, but ownership is
// what protects a session: another uid's session does not exist as far as a
// caller can tell (not_found), and recently closed ones answer
// session_closed, with why, to their owner only.
#pragma once

#include <sys/types.h>

#include <deque>
#include <map>
#include <string>
#include <vector>

#include <sandbox/result.h>

#include "daemon/scheduler.h"

namespace sandbox::daemon {

class SessionRegistry {
 public:
  // Closed ids remembered for a clear session_closed; the oldest are forgotten.
  static constexpr size_t kClosedKept = 1024;

  static Result<std::string> new_id();
  void add(const std::string& id, LeaseId lease, uid_t owner);
  // The lease of `owner`'s session `id`: not_found for an unknown id or
  // another uid's, session_closed for one of the owner's recently closed.
  Result<LeaseId> find(const std::string& id, uid_t owner) const;
  void closed(const std::string& id, std::string why);
  std::vector<LeaseId> of(uid_t owner) const;
  size_t open() const { return open_.size(); }

 private:
  struct Open {
    LeaseId lease;
    uid_t owner;
  };
  struct Closed {
    uid_t owner;
    std::string why;
  };
  std::map<std::string, Open> open_;
  std::map<std::string, Closed> closed_;
  std::deque<std::string> closed_order_;
};

}  // namespace sandbox::daemon
