// The small parts of the core: the scheduler's counts and queue, the
// session registry, byte budgets, the snapshot rule and log escaping.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>

#include "daemon/budget.h"
#include "daemon/log.h"
#include "daemon/options.h"
#include "daemon/scheduler.h"
#include "daemon/sessions.h"
#include "daemon/snapshot_flow.h"

using namespace sandbox;
using namespace sandbox::daemon;

TEST_CASE("scheduler: per-uid caps for runs and sessions, counted apart") {
  Scheduler s({2, 1});
  CHECK(s.reserve(1, Scheduler::Kind::run).ok());
  CHECK(s.reserve(1, Scheduler::Kind::run).ok());
  auto third = s.reserve(1, Scheduler::Kind::run);
  REQUIRE_FALSE(third.ok());
  CHECK(third.error().code == ErrorCode::capacity);
  CHECK(s.reserve(2, Scheduler::Kind::run).ok());
  CHECK(s.reserve(1, Scheduler::Kind::session).ok());
  CHECK_FALSE(s.reserve(1, Scheduler::Kind::session).ok());
  s.release(1, Scheduler::Kind::run);
  CHECK(s.held(1, Scheduler::Kind::run) == 1);
  CHECK(s.reserve(1, Scheduler::Kind::run).ok());
}

TEST_CASE("scheduler: the queue is served in order and stops at the first that cannot start") {
  Scheduler s({10, 10});
  for (LeaseId id : {1, 2, 3}) s.enqueue(id);
  std::vector<LeaseId> started;
  s.pump([&](LeaseId id) {
    if (id == 2) return false;
    started.push_back(id);
    return true;
  });
  CHECK(started == std::vector<LeaseId>{1});
  CHECK(s.queued() == 2);
  s.remove(2);
  s.pump([&](LeaseId id) {
    started.push_back(id);
    return true;
  });
  CHECK(started == std::vector<LeaseId>{1, 3});
  CHECK(s.queued() == 0);
}

TEST_CASE("sessions: ids are unguessable, ownership hides them, closed ones say why to their owner") {
  SessionRegistry r;
  auto a = SessionRegistry::new_id(), b = SessionRegistry::new_id();
  REQUIRE(a.ok());
  CHECK(a->size() == 26);
  CHECK(*a != *b);
  r.add(*a, 7, 1000);
  CHECK(*r.find(*a, 1000) == 7);
  CHECK(r.find(*a, 1001).error().code == ErrorCode::not_found);
  CHECK(r.find("s-nope", 1000).error().code == ErrorCode::not_found);
  r.closed(*a, "idle for 300 s");
  CHECK(r.find(*a, 1000).error().code == ErrorCode::session_closed);
  CHECK(r.find(*a, 1000).error().message.find("idle for 300 s") != std::string::npos);
  CHECK(r.find(*a, 1001).error().code == ErrorCode::not_found);
  // The memory of closed sessions is bounded.
  for (size_t i = 0; i < SessionRegistry::kClosedKept; ++i) {
    std::string id = "s-" + std::to_string(i);
    r.add(id, i, 1000);
    r.closed(id, "x");
  }
  CHECK(r.find(*a, 1000).error().code == ErrorCode::not_found);
  CHECK(r.open() == 0);
}

TEST_CASE("sessions: the journal tells the next daemon which sessions were open; a shutdown keeps them in it") {
  char tmpl[] = "/tmp/sandboxd-journal.XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string path = dir + "/sessions";
  {
    SessionRegistry first;
    CHECK(first.open_journal(path) == 0);
    first.add("s-open", 1, 1000);
    first.add("s-ended", 2, 1000);
    first.closed("s-ended", "closed");
    // Killed here: nothing more is written.
  }
  {
    SessionRegistry second;
    CHECK(second.open_journal(path) == 1);
    auto gone = second.find("s-open", 1000);
    REQUIRE_FALSE(gone.ok());
    CHECK(gone.error().code == ErrorCode::session_closed);
    CHECK(gone.error().message.find("sandboxd restarted") != std::string::npos);
    // Still hidden from other users; one closed before the restart is unknown.
    CHECK(second.find("s-open", 1001).error().code == ErrorCode::not_found);
    CHECK(second.find("s-ended", 1000).error().code == ErrorCode::not_found);
    second.add("s-new", 3, 1000);
    // A shutdown closes its sessions, and the journal keeps them.
    second.freeze_journal();
    second.closed("s-new", "sandboxd is shutting down");
  }
  SessionRegistry third;
  CHECK(third.open_journal(path) == 1);
  CHECK(third.find("s-new", 1000).error().code == ErrorCode::session_closed);
  CHECK(third.find("s-open", 1000).error().code == ErrorCode::not_found);
  std::filesystem::remove_all(dir);
}

TEST_CASE("byte budgets bound each uid and the whole, and give back what a hold had") {
  ByteBudget b(100, 150, "test bytes");
  {
    auto h1 = b.open(1);
    CHECK(h1.grow(80).ok());
    CHECK_FALSE(h1.grow(30).ok());  // past the uid's share
    auto h2 = b.open(2);
    CHECK(h2.grow(70).ok());
    auto over = h2.grow(10);  // past the whole
    REQUIRE_FALSE(over.ok());
    CHECK(over.error().code == ErrorCode::capacity);
    h1.shrink(50);
    CHECK(h2.grow(10).ok());
    CHECK(b.used() == 110);
    auto moved = std::move(h1);
    CHECK(b.used_by(1) == 30);
  }
  CHECK(b.used() == 0);
  CHECK(b.used_by(1) == 0);
}

TEST_CASE("snapshots: a restore that missed a deadline does not condemn its snapshot; one that failed does") {
  CHECK_FALSE(restore_failure_condemns_snapshot(Error::make(ErrorCode::timeout, "VM did not boot within the deadline")));
  CHECK(restore_failure_condemns_snapshot(Error::make(ErrorCode::vm_boot_failed, "migration failed")));
  CHECK(restore_failure_condemns_snapshot(Error::make(ErrorCode::communication, "agent channel closed")));
}

TEST_CASE("log lines cannot be forged: control characters are escaped, length is bounded") {
  CHECK(log_escape("type\nname\x1b[31m") == "type\\x0aname\\x1b[31m");
  CHECK(log_escape(std::string(5000, 'a'), 100).size() == 103);
  CHECK(log_escape("caf\xc3\xa9") == "caf\xc3\xa9");
}

TEST_CASE("options: every part's settings come from the configuration, in one place") {
  Config c;
  RuntimeFacts f;
  f.accel = Accel::tcg;
  f.host_memory_kb = 24ull << 20;  // 24 GiB
  f.cpus = 2;
  f.socket_gid = 4242;
  auto o = options_from(c, f);
  // 0 derives the VM budget: 4 per CPU under TCG here, 3/4 of it per uid.
  CHECK(o.manager.max_vms == 8);
  CHECK(o.manager.limits.runs_per_uid == 6);
  CHECK(o.manager.limits.sessions_per_uid == c.max_sessions_per_uid);
  CHECK(o.manager.lease.startup_timeout.count() == c.startup_timeout_ms);
  CHECK(o.manager.lease.queue_timeout.count() == c.queue_timeout_ms);
  CHECK(o.manager.lease.accelerator == "tcg");
  CHECK(o.manager.pool.size[0] == c.pool_python);
  CHECK(o.manager.pool.warm_up);  // TCG: restored pool VMs warm their translation cache
  CHECK(o.manager.pool.refill_concurrency == 2);  // 0 derives one refill per CPU
  c.pool_refill_concurrency = 1;
  CHECK(options_from(c, f).manager.pool.refill_concurrency == 1);
  c.pool_refill_concurrency = 0;
  f.cpus = 64;
  CHECK(options_from(c, f).manager.pool.refill_concurrency == kMaxDefaultRefills);
  f.cpus = -1;  // sysconf failed
  CHECK(options_from(c, f).manager.pool.refill_concurrency == 1);
  f.cpus = 2;
  CHECK(o.service.default_idle_timeout.count() == c.session_idle_timeout_ms);
  CHECK(o.service.access.allowed_gids == std::vector<gid_t>{4242});  // the socket's group may connect
  CHECK(o.control.max_connections == c.max_connections);
  CHECK(o.control.frame_timeout.count() == c.frame_timeout_ms);
  f.accel = Accel::kvm;
  CHECK(default_max_vms(f.host_memory_kb, 2, 256, Accel::kvm) == 32);
  CHECK(default_max_vms(1 << 20, 64, 256, Accel::kvm) == 2);  // 1 GiB holds two
  CHECK_FALSE(options_from(c, f).manager.pool.warm_up);
}
