// The service layer, with the core on fake VMs: one request path for both
// transports, so its rules are checked here once: authorization, defaults,
// validation, request ids, per-peer limits, uploads and their budget, and
// what a departing peer leaves behind.
#include <doctest/doctest.h>

#include "common/files.h"
#include "daemon/options.h"
#include "daemon/service.h"
#include "fake_vm.h"

using namespace sandbox;
using namespace sandbox::daemon;
using namespace sandbox::test;
using ms = std::chrono::milliseconds;
using State = VmHandle::State;

namespace {

struct Stack {
  Loop loop;
  FakeFactory factory{loop.get()};
  std::unique_ptr<Manager> manager;
  std::unique_ptr<Service> service;
  explicit Stack(ServiceOptions so = options_from(Config{}, RuntimeFacts{}).service) {
    ManagerOptions mo = options_from(Config{}, RuntimeFacts{}).manager;
    mo.max_vms = 4;
    mo.limits = {8, 4};
    mo.lease.queue_timeout = ms(5000);
    mo.pool.size = {0, 0, 0};
    manager = std::make_unique<Manager>(loop.get(), factory, nullptr, mo);
    if (so.access.allowed_uids.empty()) so.access = {{1000}, {}, 0};
    service = std::make_unique<Service>(*manager, so);
  }
  ~Stack() {
    service.reset();
    manager.reset();
    loop.settle();
  }
  FakeVm* busy() { return wait_busy(loop, factory); }
};

struct Client {
  std::shared_ptr<Collect> sink = std::make_shared<Collect>();
  std::shared_ptr<Service::Peer> peer;
  Client(Service& s, uid_t uid = 1000) : peer(s.connect(Caller{uid, uid, 1}, sink)) {}
};

proto::Run run(uint64_t id, std::string code = "print(1)") {
  return proto::Run{id, RunRequest{Language::python, std::move(code), {}, ms(0), 0}};
}

}  // namespace

TEST_CASE("service: who may connect") {
  Stack s;
  CHECK(s.service->authorize(Caller{0, 0, 1}, std::nullopt).ok());
  CHECK(s.service->authorize(Caller{1000, 1000, 1}, std::nullopt).ok());
  auto no = s.service->authorize(Caller{4'000'000'000u, 4'000'000'000u, 1}, std::nullopt);
  REQUIRE_FALSE(no.ok());
  CHECK(no.error().code == ErrorCode::permission_denied);
}

TEST_CASE("service: defaults fill what a request leaves at 0, and validation runs before the core") {
  Stack s;
  Client c(*s.service);
  CHECK(s.service->handle(*c.peer, run(1)));
  FakeVm* vm = s.busy();
  REQUIRE(vm);
  CHECK(vm->shape().memory_mb == 256);
  CHECK(std::get<proto::Exec>(vm->frames().front()).timeout_ms == 30'000);
  CHECK(s.service->handle(*c.peer, run(2, "   ")));
  auto* err = c.sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->id == 2);
  CHECK(err->message == "code is only white space");
  CHECK(s.factory.starts == 1);
}

TEST_CASE("service: a request id in use is refused, whatever the request kind") {
  Stack s;
  Client c(*s.service);
  s.service->handle(*c.peer, run(5));
  REQUIRE(s.busy());
  s.service->handle(*c.peer, proto::SessionCreate{5, SessionOptions{}});
  auto* err = c.sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->id == 5);
  CHECK(err->message.find("already in use") != std::string::npos);
  CHECK(s.service->in_flight(*c.peer) == 1);
  // The run is still the peer's: its going cancels it.
  s.service->disconnect(*c.peer);
  CHECK(s.loop.until([&] { return s.factory.alive == 0; }));
}

TEST_CASE("service: requests in flight per peer are bounded, with capacity") {
  ServiceOptions so = options_from(Config{}, RuntimeFacts{}).service;
  so.access = {{1000}, {}, 0};
  so.max_requests_per_peer = 2;
  Stack s(so);
  Client c(*s.service);
  s.service->handle(*c.peer, run(1));
  s.service->handle(*c.peer, run(2));
  s.service->handle(*c.peer, run(3));
  auto* err = c.sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->id == 3);
  CHECK(err->code == ErrorCode::capacity);
}

TEST_CASE("service: a finished request frees its id") {
  Stack s;
  Client c(*s.service);
  s.service->handle(*c.peer, run(1));
  s.busy()->finish(0);
  REQUIRE(s.loop.until([&] { return c.sink->finished(); }));
  CHECK(s.service->in_flight(*c.peer) == 0);
  s.service->handle(*c.peer, run(1));
  CHECK(s.service->in_flight(*c.peer) == 1);
}

TEST_CASE("service: messages no client may send drop the peer") {
  Stack s;
  Client c(*s.service);
  CHECK_FALSE(s.service->handle(*c.peer, proto::Hello{2, "k", ""}));
  CHECK_FALSE(s.service->handle(*c.peer, proto::ExecDone{}));
  CHECK(c.sink->last<proto::ErrorReply>()->message.find("may not send 'exec_done'") != std::string::npos);
}

TEST_CASE("service: only operators may empty the snapshot cache") {
  Stack s;
  Client user(*s.service, 1000), root(*s.service, 0);
  s.service->handle(*user.peer, proto::SnapshotsRequest{1, true});
  CHECK(user.sink->last<proto::ErrorReply>()->code == ErrorCode::permission_denied);
  s.service->handle(*user.peer, proto::SnapshotsRequest{2, false});
  CHECK(user.sink->last<proto::SnapshotList>());
  s.service->handle(*root.peer, proto::SnapshotsRequest{3, true});
  CHECK(root.sink->last<proto::SnapshotList>());
}

TEST_CASE("service: any allowed peer learns which images the VMs boot") {
  auto so = options_from(Config{}, RuntimeFacts{}).service;
  so.images.kernel_release = "6.1.0-99-amd64";
  so.images.tools = {{"python3", "python3.11", "3.11.2-6+deb12u6"}};
  Stack s(so);
  Client c(*s.service);
  CHECK(s.service->handle(*c.peer, proto::ImagesRequest{7}));
  auto* list = c.sink->last<proto::ImageList>();
  REQUIRE(list);
  CHECK(list->id == 7);
  CHECK(list->images.kernel_release == "6.1.0-99-amd64");
  REQUIRE(list->images.tools.size() == 1);
  CHECK(list->images.tools[0].package == "python3.11");
}

namespace {

std::string open_session(Stack& s, Client& c, uint64_t id) {
  s.service->handle(*c.peer, proto::SessionCreate{id, SessionOptions{}});
  REQUIRE(s.loop.until([&] { return c.sink->last<proto::SessionList>() != nullptr; }));
  return c.sink->last<proto::SessionList>()->sessions.at(0).id;
}

}  // namespace

TEST_CASE("service: an upload is assembled from its chunks, checked, then queued on its session") {
  Stack s;
  Client c(*s.service);
  std::string sid = open_session(s, c, 1);
  std::string data(3 << 20, 'z');
  auto chunks = compress_chunks(data);
  REQUIRE(chunks.size() == 3);
  s.service->handle(*c.peer, proto::FileWrite{2, sid, "dir/f.bin", data.size(), false});
  for (auto& ch : chunks) s.service->handle(*c.peer, proto::FileChunk{2, ch});
  FakeVm* vm = s.busy();
  REQUIRE(vm);
  // Header and chunks go to the guest under the agent's own id.
  REQUIRE(vm->frames().size() == 4);
  CHECK(std::get<proto::FileWrite>(vm->frames()[0]).path == "dir/f.bin");
  vm->answer_file(proto::FileDone{vm->job(), data.size()});
  REQUIRE(s.loop.until([&] { return c.sink->last<proto::FileDone>() != nullptr; }));
  CHECK(c.sink->last<proto::FileDone>()->id == 2);
  CHECK(s.service->upload_bytes() == 0);
}

TEST_CASE("service: uploads are refused for bad paths, lying sizes and past the per-uid budget") {
  ServiceOptions so = options_from(Config{}, RuntimeFacts{}).service;
  so.access = {{1000}, {}, 0};
  so.upload_bytes_per_uid = 1 << 20;
  Stack s(so);
  Client c(*s.service);
  std::string sid = open_session(s, c, 1);
  s.service->handle(*c.peer, proto::FileWrite{2, sid, "../x", 1, false});
  CHECK(c.sink->last<proto::ErrorReply>()->id == 2);
  // Its chunks are then dropped, not errors.
  size_t replies = c.sink->got.size();
  s.service->handle(*c.peer, proto::FileChunk{2, compress_chunk("x")});
  CHECK(c.sink->got.size() == replies);
  // More data than declared.
  s.service->handle(*c.peer, proto::FileWrite{3, sid, "lie", 3, false});
  s.service->handle(*c.peer, proto::FileChunk{3, compress_chunk("too long")});
  CHECK(c.sink->last<proto::ErrorReply>()->id == 3);
  CHECK(c.sink->last<proto::ErrorReply>()->message.find("more data") != std::string::npos);
  // Past the budget: random data does not compress.
  std::string noise(1 << 20, '\0');
  uint32_t x = 1;
  for (auto& ch : noise) ch = static_cast<char>(x = x * 1103515245 + 12345, x >> 16);
  s.service->handle(*c.peer, proto::FileWrite{4, sid, "big", noise.size() * 2, false});
  s.service->handle(*c.peer, proto::FileChunk{4, compress_chunk(noise)});
  auto* err = c.sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->id == 4);
  CHECK(err->code == ErrorCode::capacity);
  CHECK(s.service->upload_bytes() == 0);
  // A chunk for nothing at all is an error.
  s.service->handle(*c.peer, proto::FileChunk{99, compress_chunk("x")});
  CHECK(c.sink->last<proto::ErrorReply>()->id == 99);
}

TEST_CASE("service: a departing peer's partial upload and queued jobs go; its session stays") {
  Stack s;
  Client owner(*s.service);
  std::string sid = open_session(s, owner, 1);
  s.service->handle(*owner.peer, proto::SessionExec{2, sid, "while True: pass", 0});
  FakeVm* vm = s.busy();
  {
    Client other(*s.service);
    std::string data(2 << 20, 'q');
    auto chunks = compress_chunks(data);
    s.service->handle(*other.peer, proto::FileWrite{1, sid, "queued.bin", data.size(), false});
    for (auto& ch : chunks) s.service->handle(*other.peer, proto::FileChunk{1, ch});
    s.service->handle(*other.peer, proto::FileWrite{2, sid, "partial.bin", data.size(), false});
    s.service->handle(*other.peer, proto::FileChunk{2, chunks[0]});
    CHECK(s.service->upload_bytes() > 0);
    s.service->disconnect(*other.peer);
  }
  s.loop.settle();
  CHECK(s.service->upload_bytes() == 0);
  // The owner's exec is still running, and the session takes more work.
  CHECK(vm->state() == State::busy);
  vm->finish(0);
  REQUIRE(s.loop.until([&] { return owner.sink->last<proto::Finished>() != nullptr; }));
  CHECK(vm->frames().size() == 1);  // the departed peer's write never reached the guest
}

TEST_CASE("service: a departing peer's running session exec is stopped, the session stays usable") {
  Stack s;
  Client owner(*s.service);
  std::string sid = open_session(s, owner, 1);
  Client caller(*s.service);
  s.service->handle(*caller.peer, proto::SessionExec{7, sid, "while True: pass", 0});
  FakeVm* vm = s.busy();
  s.service->disconnect(*caller.peer);
  REQUIRE(vm->sent().size() == 1);
  CHECK(std::holds_alternative<proto::Cancel>(vm->sent()[0]));
  vm->finish(130);
  s.service->handle(*owner.peer, proto::SessionExec{8, sid, "print(2)", 0});
  REQUIRE(s.busy() == vm);
  vm->finish(0);
  REQUIRE(s.loop.until([&] { return owner.sink->last<proto::Finished>() != nullptr; }));
  CHECK(owner.sink->last<proto::Finished>()->id == 8);
}

TEST_CASE("service: a session opening dies with the peer that asked for it") {
  Stack s;
  s.factory.auto_boot = false;
  Client c(*s.service);
  s.service->handle(*c.peer, proto::SessionCreate{1, SessionOptions{}});
  REQUIRE(s.loop.until([&] { return s.factory.alive == 1; }));
  s.service->disconnect(*c.peer);
  CHECK(s.loop.until([&] { return s.factory.alive == 0; }));
}

TEST_CASE("service: a drain is root's; it refuses new work, keeps sessions until the deadline, then closes them") {
  Stack s;
  Client user(*s.service, 1000), root(*s.service, 0);
  std::string sid = open_session(s, user, 1);
  s.service->handle(*user.peer, proto::Drain{2, 60'000});
  CHECK(user.sink->last<proto::ErrorReply>()->code == ErrorCode::permission_denied);
  CHECK_FALSE(s.manager->status().draining);

  s.service->handle(*root.peer, proto::Drain{3, 300});
  auto* st = root.sink->last<proto::Status>();
  REQUIRE(st);
  CHECK(st->status.draining);
  CHECK(st->status.sessions == 1);
  // New runs and sessions: capacity, so that a router places them elsewhere.
  s.service->handle(*user.peer, run(4));
  auto* err = user.sink->last<proto::ErrorReply>();
  REQUIRE(err);
  CHECK(err->id == 4);
  CHECK(err->code == ErrorCode::capacity);
  CHECK(err->message == "sandboxd is draining");
  // The open session still takes execs.
  s.service->handle(*user.peer, proto::SessionExec{5, sid, "print(2)", 0});
  FakeVm* vm = s.busy();
  REQUIRE(vm);
  vm->finish(0);
  REQUIRE(s.loop.until([&] { return user.sink->last<proto::Finished>() != nullptr; }));
  CHECK(user.sink->last<proto::Finished>()->id == 5);
  // A second drain changes nothing.
  s.service->handle(*root.peer, proto::Drain{6, 1});
  CHECK(root.sink->last<proto::Status>()->status.sessions == 1);
  // Past the deadline the session is closed and its VM gone.
  CHECK(s.loop.until([&] { return s.factory.alive == 0; }));
  CHECK(s.manager->status().sessions == 0);
  CHECK(s.manager->status().draining);
}
