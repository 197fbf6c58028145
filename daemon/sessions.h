// Session ids and who they belong to. An id is unguessable, but ownership is
// what protects a session: another uid's session does not exist as far as a
// caller can tell (not_found), and recently closed ones answer
// session_closed, with why, to their owner only.
//
// With a journal file, the open sessions (id and owner) are kept on disk,
// so the next daemon after a crash or a restart answers their callers
// session_closed ("sandboxd restarted") rather than not_found: a router
// tells a client its session is gone (410), not that it never was.
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
  // Takes over what an earlier daemon's journal at `path` left (its open
  // sessions become closed ones) and keeps the journal from now on.
  // Returns how many sessions the earlier daemon had open.
  size_t open_journal(std::string path);
  // Shutting down: sessions closed from now on close because this daemon
  // goes, so the journal keeps them for the next one.
  void freeze_journal() { journal_frozen_ = true; }
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
  void remember_closed(const std::string& id, uid_t owner, std::string why);
  // Rewrites the journal with the open sessions (temp file and rename).
  void save() const;

  std::map<std::string, Open> open_;
  std::map<std::string, Closed> closed_;
  std::deque<std::string> closed_order_;
  std::string journal_;
  bool journal_frozen_ = false;
};

}  // namespace sandbox::daemon
