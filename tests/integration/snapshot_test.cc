// Snapshots: restore instead of boot, corruption, entropy, keys.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> snapshot_dirs(const TestDaemon& d) {
  std::vector<std::string> out;
  for (auto& e : list_dir(d.dir() + "/state/snapshots"))
    if (!e.starts_with(".")) out.push_back(e);
  return out;
}

// Runs until the daemon's snapshot count reaches n (a template VM makes one
// in the background after a boot).
bool wait_snapshots(const TestDaemon& d, size_t n) {
  auto until = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < until) {
    if (snapshot_dirs(d).size() >= n && d.log().find("snapshot ready") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

RunRequest with_memory(std::string code, uint32_t mb) {
  auto r = make_request(Language::python, std::move(code));
  r.memory_mb = mb;
  return r;
}

}  // namespace

TEST_CASE("snapshots: boot without one, restore once it exists, fresh entropy per clone") {
  TestDaemon d;
  REQUIRE(d.start({"--snapshots", "on"}));
  Client c(d.socket());
  const char* code = "import os, random\nprint(os.urandom(16).hex(), random.random())";
  auto first = c.run(make_request(Language::python, code));
  REQUIRE_MESSAGE(first.ok(), first.error().describe());
  CHECK(first->vm_start == "boot");
  REQUIRE(wait_snapshots(d, 1));

  auto a = c.run(make_request(Language::python, code));
  auto b = c.run(make_request(Language::python, code));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->vm_start == "snapshot");
  CHECK(b->vm_start == "snapshot");
  CHECK(a->timing.boot_ms < first->timing.boot_ms);
  CHECK(a->stdout_data.size() > 40);
  CHECK(a->stdout_data != b->stdout_data);
  // The template's interpreter loaded the common modules for its clones,
  // none that holds random state, and its marker is gone from the
  // environment the code sees.
  auto loaded = c.run(make_request(
      Language::python, "import os, sys\nprint('json' in sys.modules, 'decimal' in sys.modules, "
                        "'random' in sys.modules, 'SANDBOX_PRELOAD' in os.environ)"));
  REQUIRE(loaded.ok());
  CHECK(loaded->vm_start == "snapshot");
  CHECK(loaded->stdout_data == "True True False False\n");
  // A clone with its own environment gets a fresh interpreter on the same snapshot.
  auto env = make_request(Language::python, "import os\nprint(os.environ['K'])");
  env.env = {{"K", "v"}};
  auto e = c.run(env);
  REQUIRE(e.ok());
  CHECK(e->vm_start == "snapshot");
  CHECK(e->stdout_data == "v\n");
  // With its snapshot machinery idle, SIGTERM ends the daemon cleanly.
  int status = d.stop(std::chrono::seconds(60));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("snapshots: another memory size is another snapshot") {
  TestDaemon d;
  REQUIRE(d.start({"--snapshots", "on"}));
  Client c(d.socket());
  REQUIRE(c.run(with_memory("print(1)", 256)).ok());
  REQUIRE(wait_snapshots(d, 1));
  auto big = c.run(with_memory("print(2)", 384));
  REQUIRE(big.ok());
  CHECK(big->vm_start == "boot");
  REQUIRE(wait_snapshots(d, 2));
  CHECK(snapshot_dirs(d).size() == 2);
  auto again = c.run(with_memory("print(3)", 384));
  REQUIRE(again.ok());
  CHECK(again->vm_start == "snapshot");

  // Listed with keys and sizes; dropped on request.
  auto listed = run_command({SANDBOXCTL_BIN, "snapshots", "--json", "--socket", d.socket()});
  CHECK(listed.exit_code == 0);
  CHECK(listed.out.find("\"memory_mb\":256") != std::string::npos);
  CHECK(listed.out.find("\"memory_mb\":384") != std::string::npos);
  auto list = c.snapshots();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK(list->at(0).key.size() == 24);
  CHECK(list->at(0).bytes > (32u << 20));
  auto dropped = run_command({SANDBOXCTL_BIN, "snapshots", "--drop", "--socket", d.socket()});
  CHECK(dropped.exit_code == 0);
  CHECK(c.snapshots()->empty());
  CHECK(snapshot_dirs(d).empty());
}

TEST_CASE("snapshots: a corrupted snapshot is detected and replaced") {
  char tmpl[] = "/tmp/sandboxd-snapstate.XXXXXX";
  std::string state = ::mkdtemp(tmpl);
  {
    TestDaemon d;
    REQUIRE(d.start({"--snapshots", "on", "--state-dir", state}));
    REQUIRE(Client(d.socket()).run(make_request(Language::python, "print(1)")).ok());
    // Saved and written out (a temp directory until then).
    auto published = [&] {
      auto e = list_dir(state + "/snapshots");
      return e.size() == 1 && !e[0].starts_with(".");
    };
    auto until = Clock::now() + std::chrono::seconds(60);
    while (!published() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    REQUIRE(d.wait_children_at_most(0, std::chrono::seconds(60)));
  }
  auto entries = list_dir(state + "/snapshots");
  REQUIRE(entries.size() == 1);
  std::string snap = state + "/snapshots/" + entries[0];
  {
    // Flip bytes in the middle of the device state.
    std::fstream f(snap + "/state", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.write("corrupted!", 10);
  }
  TestDaemon d;
  REQUIRE(d.start({"--snapshots", "on", "--state-dir", state}));
  CHECK(d.log().find("(corrupt: hash mismatch)") != std::string::npos);
  auto r = Client(d.socket()).run(make_request(Language::python, "print('still works')"));
  REQUIRE(r.ok());
  CHECK(r->vm_start == "boot");
  CHECK(r->stdout_data == "still works\n");
  auto until = Clock::now() + std::chrono::seconds(60);
  while (list_dir(state + "/snapshots").empty() && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(list_dir(state + "/snapshots").size() == 1);
  d.stop();
  fs::remove_all(state);
}

TEST_CASE("snapshots: warm-pool VMs restored from a snapshot serve correct runs") {
  TestDaemon d;
  REQUIRE(d.start({"--snapshots", "on", "--pool-python", "1", "--pool-restore", "on", "--pids-max", "200"}));
  Client c(d.socket());
  REQUIRE(wait_snapshots(d, 1));
  // Take the booted pool VM; its replacement is restored from the snapshot.
  // Under TCG both warmed up before they were ready, which left the exec
  // tree at the daemon's pids limit, and the run, finding it set, writes
  // none; either way the run must see that limit.
  for (int i = 0; i < 2; ++i) {
    auto until = Clock::now() + std::chrono::seconds(60);
    bool ready = false;
    while (!ready && Clock::now() < until) {
      auto st = c.status();
      ready = st.ok() && st->pool[0].ready == 1 && st->pool[0].booting == 0;
      if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(ready);
    // The template's interpreter (its preloaded modules) serves the run:
    // a warm-up under TCG, in a child of it, left nothing in its output,
    // its status or its arguments.
    auto r = c.run(make_request(Language::python, "import sys\nprint('warm', 6*7, 'decimal' in sys.modules, sys.argv,\n"
                                                  "      open('/sys/fs/cgroup/exec/pids.max').read().strip())\n"
                                                  "sys.exit(5)"));
    REQUIRE_MESSAGE(r.ok(), r.error().describe());
    CHECK(r->vm_start == "pool");
    if (i == 1) CHECK(r->stdout_data == "warm 42 True ['/run/sandbox/main.py'] 200\n");
    CHECK(r->stdout_data.starts_with("warm 42 "));
    CHECK(r->stdout_data.ends_with(" 200\n"));
    CHECK(r->stderr_data == "");
    CHECK(r->exit_code == 5);
  }
  CHECK(d.log().find("warm pool: python VM ready") != std::string::npos);
}

TEST_CASE("snapshots: one that fails to restore is discarded and the run boots") {
  TestDaemon d;
  REQUIRE(d.start({"--snapshots", "on"}));
  Client c(d.socket());
  REQUIRE(c.run(make_request(Language::python, "print(1)")).ok());
  REQUIRE(wait_snapshots(d, 1));
  REQUIRE(d.wait_children_at_most(0, std::chrono::seconds(60)));
  // Damage the device state behind the daemon's back (it verified the cache
  // at start-up only): the header QEMU checks first.
  auto dirs = snapshot_dirs(d);
  REQUIRE(dirs.size() == 1);
  {
    std::fstream f(d.dir() + "/state/snapshots/" + dirs[0] + "/state", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.write("NOTQEMU!", 8);
  }
  auto r = c.run(make_request(Language::python, "print('booted instead')"));
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->vm_start == "boot (snapshot failed)");
  CHECK(r->stdout_data == "booted instead\n");
  CHECK(d.log().find("discarded") != std::string::npos);
}
