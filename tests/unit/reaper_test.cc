// The Reaper (daemon/reaper.h) with real child processes, a fake cgroup
// tree and real VM records: a killed process is reaped from the loop, not
// waited for where it is handed over, and its cgroup and record go after
// it; a reaper destroyed with processes left kills and reaps them there.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "common/process.h"
#include "daemon/reaper.h"
#include "daemon/recovery.h"
#include "temp_dir.h"
#include "test_loop.h"

using namespace sandbox;
using namespace sandbox::daemon;
using sandbox::test::Loop;
using sandbox::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A cgroup tree of plain files (as tests/unit/cgroups_test.cc makes them)
// and a records directory, and QEMUs that are `sleep`.
struct Host {
  TempDir dir;
  Cgroups cgroups;
  std::string records;
  Host() {
    fs::create_directories(dir.path + "/svc");
    dir.write("svc/cgroup.controllers", "memory pids");
    dir.write("svc/cgroup.subtree_control", "");
    cgroups = Cgroups::open({dir.path, "/svc", false});
    records = dir.path + "/records";
    fs::create_directories(records);
  }
  LaunchedQemu start(const std::string& name) {
    LaunchedQemu q;
    auto p = Process::spawn({.argv = {"/bin/sleep", "60"}});
    REQUIRE(p.ok());
    q.process = std::move(*p);
    q.name = name;
    REQUIRE(cgroups.create(name, {1 << 30, 1 << 29, 64, 0}).ok());
    q.has_cgroup = true;
    auto record = VmRecord::write(records, name, q.process.pid());
    REQUIRE(record.ok());
    q.record.emplace(std::move(*record));
    return q;
  }
  bool cgroup_exists(const std::string& name) const { return fs::exists(dir.path + "/svc/vms/" + name); }
  bool record_exists(const std::string& name) const { return fs::exists(records + "/" + name); }
};

// The process `pid` that started at `start` (a zombie included): a pid
// reused by another process does not count.
bool still_there(pid_t pid, const std::string& start) { return process_start_time(pid) == start; }

}  // namespace

TEST_CASE("reaper: a killed process is reaped from the loop, then its cgroup and record go") {
  Host host;
  REQUIRE(host.cgroups.enabled());
  Loop loop;
  Reaper reaper(loop.get(), &host.cgroups);
  auto q = host.start("vm-1");
  pid_t pid = q.process.pid();
  auto start = process_start_time(pid);
  REQUIRE_FALSE(start.empty());
  reaper.reap(std::move(q));
  // Handed over without waiting: the child is still ours to reap (at least
  // a zombie), and its cgroup and record are still there.
  CHECK(reaper.dying() == 1);
  CHECK(still_there(pid, start));
  CHECK(host.cgroup_exists("vm-1"));
  CHECK(host.record_exists("vm-1"));
  REQUIRE(loop.until([&] { return reaper.dying() == 0; }));
  CHECK_FALSE(still_there(pid, start));
  CHECK_FALSE(host.cgroup_exists("vm-1"));
  CHECK_FALSE(host.record_exists("vm-1"));
}

TEST_CASE("reaper: one already reaped goes at once; one destroyed with the reaper is killed and reaped there") {
  Host host;
  REQUIRE(host.cgroups.enabled());
  Loop loop;
  pid_t left_pid = 0;
  std::string left_start;
  {
    Reaper reaper(loop.get(), &host.cgroups);
    auto done = host.start("vm-done");
    done.process.kill_and_wait();
    reaper.reap(std::move(done));
    CHECK(reaper.dying() == 0);
    CHECK_FALSE(host.cgroup_exists("vm-done"));
    CHECK_FALSE(host.record_exists("vm-done"));

    auto left = host.start("vm-left");
    left_pid = left.process.pid();
    left_start = process_start_time(left_pid);
    reaper.reap(std::move(left));
    CHECK(reaper.dying() == 1);
  }  // the loop never ran
  CHECK_FALSE(still_there(left_pid, left_start));
  CHECK_FALSE(host.cgroup_exists("vm-left"));
  CHECK_FALSE(host.record_exists("vm-left"));
}
