// The core's rules, checked in memory with fake VMs: runs, the warm pool,
// the queue and its deadline, per-uid limits, eviction, boot retries,
// sessions (state, idle timeout, close, VM death), cancel and drain.
#include <doctest/doctest.h>

#include "common/files.h"
#include "daemon/manager.h"
#include "daemon/options.h"
#include "fake_vm.h"

using namespace sandbox;
using namespace sandbox::daemon;
using namespace sandbox::test;
using ms = std::chrono::milliseconds;
using State = VmHandle::State;

namespace {

// The daemon's defaults, with deadlines short enough for a unit test.
ManagerOptions options() {
  RuntimeFacts facts;
  facts.accel_reason = "fake VMs";
  ManagerOptions o = options_from(Config{}, facts).manager;
  o.version = "test";
  o.max_vms = 4;
  o.limits = {3, 2};
  o.lease.queue_timeout = ms(200);
  o.lease.startup_timeout = ms(1000);
  o.lease.kill_grace = ms(10);
  o.lease.kill_slack = ms(100);
  o.lease.file_deadline = ms(1000);
  o.lease.boot_retries = 1;
  o.lease.accelerator = "fake";
  o.pool.size = {0, 0, 0};
  o.pool.health_interval = ms(50);
  o.pool.refill_backoff = ms(50);
  return o;
}

RunRequest request(Language l = Language::python, uint32_t memory_mb = 256) {
  return RunRequest{l, "print(1)", {}, ms(1000), memory_mb};
}

struct Core {
  Loop loop;
  FakeFactory factory{loop.get()};
  std::unique_ptr<Manager> manager;
  explicit Core(ManagerOptions o = options()) {
    manager = std::make_unique<Manager>(loop.get(), factory, nullptr, std::move(o));
    manager->start();
  }
  ~Core() {
    manager.reset();
    loop.settle();
  }
  FakeVm* busy() { return wait_busy(loop, factory); }
};

Caller user(uid_t uid = 1000) { return Caller{uid, uid, 1}; }

}  // namespace

TEST_CASE("a run boots a VM, streams its output, returns its result, and the VM goes") {
  Core c;
  auto sink = std::make_shared<Collect>();
  auto id = c.manager->run(user(), 7, request(), sink);
  REQUIRE(id.ok());
  CHECK(sink->got.empty());  // nothing arrives inside the call
  FakeVm* vm = c.busy();
  REQUIRE(vm);
  auto* exec = std::get_if<proto::Exec>(&vm->frames().front());
  REQUIRE(exec);
  CHECK(exec->code == "print(1)");
  CHECK(exec->timeout_ms == 1000);
  CHECK(exec->startup_timeout_ms == 1000);
  CHECK_FALSE(exec->session);
  CHECK(vm->shape().prestart == Language::python);  // no env: the interpreter comes up during boot
  vm->output(Stream::out, "1\n");
  vm->finish(0, 33);
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  REQUIRE(sink->got.size() == 2);
  CHECK(std::get<proto::Output>(sink->got[0]).data == "1\n");
  auto* fin = sink->last<proto::Finished>();
  REQUIRE(fin);
  CHECK(fin->id == 7);
  CHECK(fin->result.stdout_data == "1\n");
  CHECK(fin->result.language == Language::python);
  CHECK(fin->result.timing.startup_ms == 33);
  CHECK(fin->result.vm_start == "boot");
  CHECK_FALSE(fin->result.warm_pool_hit);
  CHECK(fin->result.accelerator == "fake");
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
  CHECK(c.manager->leases() == 0);
}

TEST_CASE("a run with environment starts its interpreter after boot") {
  Core c;
  auto req = request();
  req.env = {{"K", "v"}};
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, req, sink).ok());
  FakeVm* vm = c.busy();
  REQUIRE(vm);
  CHECK_FALSE(vm->shape().prestart.has_value());
  CHECK(std::get<proto::Exec>(vm->frames().front()).env == req.env);
}

TEST_CASE("warm pool: a fitting run takes a ready VM, the pool refills, other sizes boot") {
  auto o = options();
  o.pool.size = {1, 0, 0};
  Core c(o);
  REQUIRE(c.loop.until([&] { return c.manager->status().pool[0].ready == 1; }));
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), sink).ok());
  FakeVm* vm = c.busy();
  REQUIRE(vm);
  vm->finish(0);
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  auto* fin = sink->last<proto::Finished>();
  REQUIRE(fin);
  CHECK(fin->result.warm_pool_hit);
  CHECK(fin->result.vm_start == "pool");
  // Refilled behind it.
  CHECK(c.loop.until([&] { return c.manager->status().pool[0].ready == 1; }));
  // A 512 MB run does not fit the pool: it boots, and counts as a miss.
  auto big = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 2, request(Language::python, 512), big).ok());
  FakeVm* cold = c.busy();
  REQUIRE(cold);
  CHECK(cold->shape().memory_mb == 512);
  cold->finish(0);
  REQUIRE(c.loop.until([&] { return big->finished(); }));
  CHECK_FALSE(big->last<proto::Finished>()->result.warm_pool_hit);
  auto st = c.manager->status();
  CHECK(st.pool[0].hits == 1);
  CHECK(st.pool[0].misses == 0);  // a size the pool does not serve is not a miss
}

TEST_CASE("queue: a full daemon queues a run, then fails it with capacity at the deadline") {
  auto o = options();
  o.max_vms = 1;
  Core c(o);
  auto first = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), first).ok());
  REQUIRE(c.busy());
  auto second = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 2, request(), second).ok());
  c.loop.settle();
  CHECK(c.manager->status().runs_queued == 1);
  REQUIRE(c.loop.until([&] { return second->finished(); }, ms(3000)));
  auto* err = second->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->id == 2);
  CHECK(err->code == ErrorCode::capacity);
  CHECK(err->message.find("queue deadline") != std::string::npos);
  CHECK(c.factory.starts == 1);
}

TEST_CASE("queue: a queued run starts when the VM ahead of it is released") {
  auto o = options();
  o.max_vms = 1;
  o.lease.queue_timeout = ms(5000);
  Core c(o);
  auto first = std::make_shared<Collect>(), second = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), first).ok());
  FakeVm* vm = c.busy();
  REQUIRE(c.manager->run(user(), 2, request(), second).ok());
  vm->finish(0);
  REQUIRE(c.loop.until([&] { return first->finished(); }));
  FakeVm* next = nullptr;
  REQUIRE(c.loop.until([&] {
    next = c.factory.last();
    return next && next != vm && next->state() == State::busy;
  }));
  next->finish(4);
  REQUIRE(c.loop.until([&] { return second->finished(); }));
  CHECK(second->last<proto::Finished>()->result.exit_code == 4);
}

TEST_CASE("per-uid limits refuse at once, and count per uid") {
  auto o = options();
  o.limits = {1, 1};
  Core c(o);
  auto a = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(1000), 1, request(), a).ok());
  auto refused = c.manager->run(user(1000), 2, request(), std::make_shared<Collect>());
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::capacity);
  CHECK(refused.error().message.find("per-user limit") != std::string::npos);
  // Another uid is not affected, and sessions are counted apart from runs.
  CHECK(c.manager->run(user(1001), 3, request(), std::make_shared<Collect>()).ok());
  CHECK(c.manager->open_session(user(1000), 4, SessionOptions{}, std::make_shared<Collect>()).ok());
  CHECK_FALSE(c.manager->open_session(user(1000), 5, SessionOptions{}, std::make_shared<Collect>()).ok());
}

TEST_CASE("eviction: with no room, an idle pool VM gives way to a run") {
  auto o = options();
  o.max_vms = 1;
  o.pool.size = {1, 0, 0};
  Core c(o);
  REQUIRE(c.loop.until([&] { return c.manager->status().pool[0].ready == 1; }));
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(Language::javascript), sink).ok());
  FakeVm* vm = c.busy();
  REQUIRE(vm);
  CHECK(vm->shape().prestart == Language::javascript);
  CHECK(c.manager->status().pool[0].ready == 0);
  CHECK(c.manager->status().vms == 1);
}

TEST_CASE("boots: a hung boot is retried once, then the run fails with vm_boot_failed") {
  Core c;
  c.factory.auto_boot = false;
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), sink).ok());
  REQUIRE(c.loop.until([&] { return c.factory.starts == 1; }));
  c.factory.last()->die(Error::make(ErrorCode::timeout, "no hello"));
  REQUIRE(c.loop.until([&] { return c.factory.starts == 2; }));
  CHECK_FALSE(sink->finished());
  c.factory.last()->die(Error::make(ErrorCode::timeout, "no hello again"));
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  auto* err = sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->code == ErrorCode::vm_boot_failed);
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
}

TEST_CASE("boots: a factory that cannot start a VM fails the run, nothing is left") {
  Core c;
  c.factory.fail_starts = 1;
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), sink).ok());
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  CHECK(sink->last<proto::ErrorReply>()->code == ErrorCode::vm_boot_failed);
  CHECK(c.manager->leases() == 0);
}

TEST_CASE("a run whose VM dies mid-exec fails with the reason") {
  Core c;
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), sink).ok());
  FakeVm* vm = c.busy();
  vm->die(Error::make(ErrorCode::communication, "VM exited"));
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  auto* err = sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->code == ErrorCode::communication);
  CHECK(err->message.find("VM exited") != std::string::npos);
}

TEST_CASE("a guest that misses its deadline loses its VM, and the result says timed out") {
  auto o = options();
  o.lease.startup_timeout = ms(10);
  Core c(o);
  auto req = request();
  req.timeout = ms(20);
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, req, sink).ok());
  REQUIRE(c.busy());
  // Never answered: past startup + timeout + grace + slack the daemon acts.
  REQUIRE(c.loop.until([&] { return sink->finished(); }, ms(3000)));
  auto* fin = sink->last<proto::Finished>();
  REQUIRE(fin);
  CHECK(fin->result.timed_out);
  CHECK(fin->result.signal == 9);
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
}

TEST_CASE("cancel: a run whose caller goes away loses its VM; nobody is told") {
  Core c;
  auto sink = std::make_shared<Collect>();
  auto id = c.manager->run(user(), 1, request(), sink);
  REQUIRE(c.busy());
  c.manager->cancel(*id);
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
  CHECK(sink->got.empty());
  CHECK(c.manager->leases() == 0);
}

TEST_CASE("sessions: opened, used, listed for their owner only, closed, then session_closed") {
  Core c;
  auto open = std::make_shared<Collect>();
  SessionOptions so;
  so.language = Language::raw;
  REQUIRE(c.manager->open_session(user(1000), 1, so, open).ok());
  REQUIRE(c.loop.until([&] { return open->finished(); }));
  auto* list = open->last<proto::SessionList>();
  REQUIRE(list);
  REQUIRE(list->sessions.size() == 1);
  std::string sid = list->sessions[0].id;
  CHECK(sid.starts_with("s-"));
  CHECK(c.manager->sessions(user(1000)).size() == 1);
  CHECK(c.manager->sessions(user(1001)).empty());

  auto exec = std::make_shared<Collect>();
  Job job;
  job.request_id = 2;
  job.request = proto::SessionExec{2, sid, "echo hi", 0};
  job.sink = exec;
  REQUIRE(c.manager->submit(user(1000), sid, std::move(job)).ok());
  FakeVm* vm = c.busy();
  REQUIRE(vm);
  auto* x = std::get_if<proto::Exec>(&vm->frames().back());
  REQUIRE(x);
  CHECK(x->session);
  CHECK(x->language == Language::raw);
  vm->output(Stream::out, "hi\n");
  vm->finish(0);
  REQUIRE(c.loop.until([&] { return exec->finished(); }));
  CHECK(exec->last<proto::Finished>()->result.stdout_data == "hi\n");
  CHECK(c.manager->sessions(user(1000))[0].exec_count == 1);

  // Another uid's view of the session: it does not exist.
  Job other;
  other.request = proto::SessionExec{3, sid, "x", 0};
  auto denied = c.manager->submit(user(1001), sid, std::move(other));
  REQUIRE_FALSE(denied.ok());
  CHECK(denied.error().code == ErrorCode::not_found);

  auto closed = std::make_shared<Collect>();
  Job close;
  close.request_id = 4;
  close.request = proto::SessionClose{4, sid};
  close.sink = closed;
  REQUIRE(c.manager->submit(user(1000), sid, std::move(close)).ok());
  REQUIRE(c.loop.until([&] { return closed->finished(); }));
  CHECK(closed->last<proto::Ack>());
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
  Job after;
  after.request = proto::SessionExec{5, sid, "x", 0};
  auto gone = c.manager->submit(user(1000), sid, std::move(after));
  REQUIRE_FALSE(gone.ok());
  CHECK(gone.error().code == ErrorCode::session_closed);
  CHECK(gone.error().message.find("closed by its owner") != std::string::npos);
}

TEST_CASE("sessions: the idle timeout closes an unused session and its VM") {
  Core c;
  auto open = std::make_shared<Collect>();
  SessionOptions so;
  so.idle_timeout = ms(50);
  REQUIRE(c.manager->open_session(user(), 1, so, open).ok());
  REQUIRE(c.loop.until([&] { return open->finished(); }));
  std::string sid = open->last<proto::SessionList>()->sessions[0].id;
  REQUIRE(c.loop.until([&] { return c.factory.alive == 0; }, ms(3000)));
  Job job;
  job.request = proto::SessionExec{2, sid, "x", 0};
  auto r = c.manager->submit(user(), sid, std::move(job));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("idle") != std::string::npos);
}

TEST_CASE("sessions: a VM that dies mid-exec closes the session; the waiting jobs hear why") {
  Core c;
  auto open = std::make_shared<Collect>();
  REQUIRE(c.manager->open_session(user(), 1, SessionOptions{}, open).ok());
  REQUIRE(c.loop.until([&] { return open->finished(); }));
  std::string sid = open->last<proto::SessionList>()->sessions[0].id;
  auto running = std::make_shared<Collect>(), waiting = std::make_shared<Collect>();
  for (auto [id, sink] : {std::pair{2u, running}, std::pair{3u, waiting}}) {
    Job j;
    j.request_id = id;
    j.request = proto::SessionExec{id, sid, "x", 0};
    j.sink = sink;
    REQUIRE(c.manager->submit(user(), sid, std::move(j)).ok());
  }
  FakeVm* vm = c.busy();
  vm->die(Error::make(ErrorCode::communication, "VM killed"));
  REQUIRE(c.loop.until([&] { return running->finished() && waiting->finished(); }));
  CHECK(running->last<proto::ErrorReply>()->code == ErrorCode::session_closed);
  CHECK(waiting->last<proto::ErrorReply>()->code == ErrorCode::session_closed);
  CHECK(waiting->last<proto::ErrorReply>()->message.find("its VM stopped") != std::string::npos);
}

TEST_CASE("sessions: a job whose caller goes away is dropped if waiting, and stopped if running") {
  Core c;
  auto open = std::make_shared<Collect>();
  REQUIRE(c.manager->open_session(user(), 1, SessionOptions{}, open).ok());
  REQUIRE(c.loop.until([&] { return open->finished(); }));
  std::string sid = open->last<proto::SessionList>()->sessions[0].id;
  auto submit = [&](uint64_t id, uint64_t token, std::shared_ptr<Collect> sink) {
    Job j;
    j.request_id = id;
    j.request = proto::SessionExec{id, sid, "while True: pass", 0};
    j.sink = sink;
    j.token = token;
    REQUIRE(c.manager->submit(user(), sid, std::move(j)).ok());
  };
  auto first = std::make_shared<Collect>(), second = std::make_shared<Collect>();
  submit(2, 20, first);
  submit(3, 30, second);
  FakeVm* vm = c.busy();
  c.manager->cancel_job(sid, 30);  // waiting: dropped
  c.manager->cancel_job(sid, 20);  // running: the guest is told to stop it
  REQUIRE(vm->sent().size() == 1);
  CHECK(std::get<proto::Cancel>(vm->sent()[0]).id == vm->job());
  vm->finish(130);
  c.loop.settle();
  // Nobody waits for these answers any more; the session stays usable.
  CHECK(first->got.empty());
  CHECK(second->got.empty());
  auto third = std::make_shared<Collect>();
  submit(4, 40, third);
  FakeVm* again = c.busy();
  REQUIRE(again == vm);
  again->finish(0);
  REQUIRE(c.loop.until([&] { return third->finished(); }));
  CHECK(third->last<proto::Finished>()->result.exit_code == 0);
}

TEST_CASE("sessions: file jobs stream chunks to the caller and check the guest's size") {
  Core c;
  auto open = std::make_shared<Collect>();
  REQUIRE(c.manager->open_session(user(), 1, SessionOptions{}, open).ok());
  REQUIRE(c.loop.until([&] { return open->finished(); }));
  std::string sid = open->last<proto::SessionList>()->sessions[0].id;
  auto read = std::make_shared<Collect>();
  Job j;
  j.request_id = 2;
  j.request = proto::FileRead{2, sid, "a.txt"};
  j.sink = read;
  REQUIRE(c.manager->submit(user(), sid, std::move(j)).ok());
  FakeVm* vm = c.busy();
  auto* fr = std::get_if<proto::FileRead>(&vm->frames().back());
  REQUIRE(fr);
  CHECK(fr->session.empty());  // the agent channel names no session
  vm->answer_file(proto::FileChunk{vm->job(), compress_chunk("hello")});
  vm->answer_file(proto::FileDone{vm->job(), 5});
  REQUIRE(c.loop.until([&] { return read->finished(); }));
  REQUIRE(read->got.size() == 2);
  CHECK(std::get<proto::FileChunk>(read->got[0]).id == 2);
  CHECK(read->last<proto::FileDone>()->size == 5);
  // A guest whose sizes do not add up loses its VM.
  auto bad = std::make_shared<Collect>();
  Job k;
  k.request_id = 3;
  k.request = proto::FileRead{3, sid, "b.txt"};
  k.sink = bad;
  REQUIRE(c.manager->submit(user(), sid, std::move(k)).ok());
  vm = c.busy();
  vm->answer_file(proto::FileChunk{vm->job(), compress_chunk("abc")});
  vm->answer_file(proto::FileDone{vm->job(), 999});
  REQUIRE(c.loop.until([&] { return bad->finished(); }));
  CHECK(bad->last<proto::ErrorReply>()->code == ErrorCode::session_closed);
}

TEST_CASE("drain: queued runs fail, idle sessions close, a running run finishes, then done") {
  auto o = options();
  o.max_vms = 2;
  o.lease.queue_timeout = ms(10'000);
  Core c(o);
  auto open = std::make_shared<Collect>();
  REQUIRE(c.manager->open_session(user(), 1, SessionOptions{}, open).ok());
  REQUIRE(c.loop.until([&] { return open->finished(); }));
  auto running = std::make_shared<Collect>(), queued = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 2, request(), running).ok());
  FakeVm* vm = c.busy();
  REQUIRE(c.manager->run(user(), 3, request(), queued).ok());
  c.loop.settle();
  bool drained = false;
  c.manager->drain(ms(10'000), [&] { drained = true; });
  REQUIRE(c.loop.until([&] { return queued->finished(); }));
  CHECK(queued->last<proto::ErrorReply>()->message.find("shutting down") != std::string::npos);
  CHECK(c.manager->sessions(user()).empty());
  CHECK_FALSE(drained);
  auto refused = c.manager->run(user(), 4, request(), std::make_shared<Collect>());
  CHECK_FALSE(refused.ok());
  vm->finish(0);
  REQUIRE(c.loop.until([&] { return drained; }));
  CHECK(running->last<proto::Finished>());
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
}

TEST_CASE("drain: past the grace, what still runs is cancelled") {
  Core c;
  auto running = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 1, request(), running).ok());
  REQUIRE(c.busy());
  bool drained = false;
  c.manager->drain(ms(20), [&] { drained = true; });
  REQUIRE(c.loop.until([&] { return drained; }, ms(3000)));
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
}

TEST_CASE("warm pool: a VM that stops answering pings is replaced") {
  auto o = options();
  o.pool.size = {0, 0, 1};
  Core c(o);
  REQUIRE(c.loop.until([&] { return c.manager->status().pool[2].ready == 1; }));
  FakeVm* first = c.factory.last();
  first->die(Error::make(ErrorCode::communication, "gone"));
  REQUIRE(c.loop.until([&] { return c.factory.starts == 2 && c.manager->status().pool[2].ready == 1; }));
  CHECK(c.factory.alive == 1);
}

TEST_CASE("warm pool: a failed boot backs off instead of looping") {
  auto o = options();
  o.pool.size = {1, 0, 0};
  o.pool.refill_backoff = ms(200);
  Loop loop;
  FakeFactory factory(loop.get());
  factory.fail_starts = 1000;
  auto m = std::make_unique<Manager>(loop.get(), factory, nullptr, o);
  m->start();
  loop.until([] { return false; }, ms(500));
  // One try, then one after each back-off: a handful, not thousands.
  CHECK(factory.starts >= 2);
  CHECK(factory.starts <= 5);
  m.reset();
  loop.settle();
}

TEST_CASE("network: a run's policy reaches its VM before the code, whose result lists the ports") {
  Core c;
  auto req = request();
  req.net.allowed_domains = {"example.org"};
  req.net.expose_ports = {{8080, 0}};
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 3, req, sink).ok());
  REQUIRE(c.loop.until([&] { return c.factory.last() && c.factory.last()->network_pending(); }));
  FakeVm* vm = c.factory.last();
  // Nothing runs until the guest has the policy.
  CHECK(vm->frames().empty());
  REQUIRE(vm->policies.size() == 1);
  CHECK(vm->policies[0].rules.size() == 1);
  CHECK(vm->policies[0].owner_uid == 1000);
  vm->ack_network();
  vm = c.busy();
  REQUIRE(vm);
  vm->finish(0);
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  auto* fin = sink->last<proto::Finished>();
  REQUIRE(fin);
  REQUIRE(fin->result.exposed_ports.size() == 1);
  CHECK(fin->result.exposed_ports[0].internal == 8080);
}

TEST_CASE("network: a guest that cannot take the policy fails the run; a run without one never asks") {
  Core c;
  auto req = request();
  req.net.allowed_domains = {"example.org"};
  auto sink = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 4, req, sink).ok());
  REQUIRE(c.loop.until([&] { return c.factory.last() && c.factory.last()->network_pending(); }));
  c.factory.last()->ack_network(Error::make(ErrorCode::communication, "channel closed"));
  REQUIRE(c.loop.until([&] { return sink->finished(); }));
  auto* err = sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->code == ErrorCode::communication);
  auto plain = std::make_shared<Collect>();
  REQUIRE(c.manager->run(user(), 5, request(), plain).ok());
  FakeVm* vm = c.busy();
  REQUIRE(vm);
  CHECK(vm->policies.empty());
  vm->finish(0);
  REQUIRE(c.loop.until([&] { return plain->finished(); }));
}

TEST_CASE("network: a session's allowlist changes at run time and its listing follows") {
  Core c;
  SessionOptions o;
  o.net.expose_ports = {{3000, 0}};
  auto sink = std::make_shared<Collect>();
  auto id = c.manager->open_session(user(), 1, o, sink);
  REQUIRE(id.ok());
  REQUIRE(c.loop.until([&] { return c.factory.last() && c.factory.last()->network_pending(); }));
  FakeVm* vm = c.factory.last();
  vm->auto_network = true;
  vm->ack_network();
  REQUIRE(c.loop.until([&] { return sink->last<proto::SessionList>() != nullptr; }));
  auto info = sink->last<proto::SessionList>()->sessions.at(0);
  REQUIRE(info.exposed_ports.size() == 1);
  CHECK(info.allowed_domains.empty());
  auto change = std::make_shared<Collect>();
  Job job;
  job.request_id = 9;
  job.request = proto::SessionNetwork{9, info.id, true, {"pypi.org"}};
  job.sink = change;
  REQUIRE(c.manager->submit(user(), info.id, std::move(job)).ok());
  REQUIRE(c.loop.until([&] { return change->last<proto::SessionList>() != nullptr; }));
  REQUIRE(vm->policies.size() == 2);
  CHECK(vm->policies[1].rules.size() == 1);
  CHECK(vm->policies[1].expose.size() == 1);  // the ports stay
  CHECK(change->last<proto::SessionList>()->sessions.at(0).allowed_domains == std::vector<std::string>{"pypi.org"});
  Job close;
  close.request_id = 10;
  close.request = proto::SessionClose{10, info.id};
  close.sink = change;
  REQUIRE(c.manager->submit(user(), info.id, std::move(close)).ok());
  CHECK(c.loop.until([&] { return c.factory.alive == 0; }));
}

