// The cgroup code against a fake cgroupfs tree in a temp directory: the same
// files a real cgroup2 tree has, as plain files.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon/cgroups.h"

using namespace sandbox;
using namespace sandbox::daemon;
namespace fs = std::filesystem;

namespace {

struct FakeTree {
  fs::path root;
  explicit FakeTree(const std::string& base, const std::string& controllers) {
    char tmpl[] = "/tmp/sandboxd-cgtest.XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    root = tmpl;
    std::string b = base == "/" ? "" : base;
    fs::create_directories(root.string() + b);
    write(b + "/cgroup.controllers", controllers);
    write(b + "/cgroup.subtree_control", "");
  }
  ~FakeTree() { fs::remove_all(root); }
  // `rel` starts with '/': always below the temp root.
  void write(const std::string& rel, const std::string& text) const { std::ofstream(root.string() + rel) << text; }
  std::string read(const std::string& rel) const {
    std::ifstream in(root.string() + rel);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  bool exists(const std::string& rel) const { return fs::exists(root.string() + rel); }
};

}  // namespace

TEST_CASE("cgroups: a delegated subtree gets daemon/ and vms/ with every controller enabled") {
  FakeTree t("/sandboxd.slice/sandboxd.service", "cpuset cpu io memory pids");
  auto cg = Cgroups::open({t.root.string(), "/sandboxd.slice/sandboxd.service", true});
  REQUIRE(cg.enabled());
  CHECK(cg.missing().empty());
  CHECK(cg.status().find("(memory, pids, cpu)") != std::string::npos);
  // The daemon leaves the subtree's top, which passes controllers down.
  CHECK(t.read("/sandboxd.slice/sandboxd.service/daemon/cgroup.procs") == std::to_string(::getpid()));
  CHECK(t.read("/sandboxd.slice/sandboxd.service/cgroup.subtree_control") == "+memory +pids +cpu");
  CHECK(t.read("/sandboxd.slice/sandboxd.service/vms/cgroup.subtree_control") == "+memory +pids +cpu");
}

TEST_CASE("cgroups: a VM's cgroup carries its limits, reports usage and is removed") {
  FakeTree t("/svc", "memory pids cpu");
  auto cg = Cgroups::open({t.root.string(), "/svc", false});
  REQUIRE(cg.enabled());
  CgroupLimits l{(256ull + 192) << 20, ((256ull + 192) << 20) - (48ull << 20), 128, 150};
  auto fd = cg.create("vm-1", l);
  REQUIRE_MESSAGE(fd.ok(), fd.error().describe());
  CHECK(fd->get() >= 0);
  CHECK(t.read("/svc/vms/vm-1/memory.max") == std::to_string((256ull + 192) << 20));
  CHECK(t.read("/svc/vms/vm-1/memory.high") == std::to_string(((256ull + 192) << 20) - (48ull << 20)));
  CHECK(t.read("/svc/vms/vm-1/pids.max") == "128");
  CHECK(t.read("/svc/vms/vm-1/cpu.max") == "150000 100000");
  // What the kernel would account; the result's metrics come from here.
  t.write("/svc/vms/vm-1/memory.peak", "123456789\n");
  t.write("/svc/vms/vm-1/cpu.stat", "usage_usec 4242\nuser_usec 4000\nsystem_usec 242\n");
  auto u = cg.usage("vm-1");
  CHECK(u.memory_peak_bytes == 123456789u);
  CHECK(u.cpu_usec == 4242u);
  cg.remove("vm-1");
  CHECK_FALSE(t.exists("/svc/vms/vm-1"));
  // Unlimited CPU is "max".
  l.cpu_percent = 0;
  REQUIRE(cg.create("vm-2", l).ok());
  CHECK(t.read("/svc/vms/vm-2/cpu.max") == "max");
  // Names cannot climb out of vms/.
  CHECK_FALSE(cg.create("../escape", l).ok());
  CHECK_FALSE(cg.create(".", l).ok());
}

TEST_CASE("cgroups: missing controllers are reported; limits are set for the rest") {
  SUBCASE("none of memory, pids, cpu: no per-VM cgroups, and the status says why") {
    FakeTree t("/svc", "hugetlb");
    auto cg = Cgroups::open({t.root.string(), "/svc", false});
    CHECK_FALSE(cg.enabled());
    CHECK(cg.missing() == std::vector<std::string>{"memory", "pids", "cpu"});
    CHECK(cg.status().find("offers none of memory, pids, cpu (it has: hugetlb)") != std::string::npos);
    CHECK_FALSE(cg.create("vm-1", {}).ok());
    CHECK_FALSE(t.exists("/svc/vms"));
  }
  SUBCASE("no cpu controller: memory and pids limits only") {
    FakeTree t("/svc", "memory pids");
    auto cg = Cgroups::open({t.root.string(), "/svc", false});
    REQUIRE(cg.enabled());
    CHECK(cg.missing() == std::vector<std::string>{"cpu"});
    CHECK(cg.status().find("missing controllers: cpu") != std::string::npos);
    CHECK(t.read("/svc/cgroup.subtree_control") == "+memory +pids");
    REQUIRE(cg.create("vm-1", {1 << 30, 1 << 29, 64, 100}).ok());
    CHECK(t.read("/svc/vms/vm-1/pids.max") == "64");
    CHECK_FALSE(t.exists("/svc/vms/vm-1/cpu.max"));
  }
  SUBCASE("no cgroup v2 tree at all") {
    auto cg = Cgroups::open({"/nonexistent-cgroup-root", "/svc", false});
    CHECK_FALSE(cg.enabled());
    CHECK(cg.missing().size() == 3);
  }
}

TEST_CASE("cgroups: a daemon in the root cgroup makes its own /sandboxd subtree") {
  FakeTree t("/", "cpu memory pids");
  auto cg = Cgroups::open({t.root.string(), "/", true});
  REQUIRE(cg.enabled());
  CHECK(cg.base_dir() == t.root.string() + "/sandboxd");
  CHECK(t.read("/cgroup.subtree_control") == "+memory +pids +cpu");
  CHECK(t.exists("/sandboxd/vms"));
  // The root cgroup may hold processes: the daemon is not moved.
  CHECK_FALSE(t.exists("/sandboxd/daemon"));
}

TEST_CASE("cgroups: recovery removes the VM cgroups an earlier daemon left") {
  FakeTree t("/svc", "memory pids cpu");
  auto cg = Cgroups::open({t.root.string(), "/svc", false});
  REQUIRE(cg.enabled());
  REQUIRE(cg.create("vm-3", {1 << 30, 1 << 29, 64, 0}).ok());
  REQUIRE(cg.create("vm-17", {1 << 30, 1 << 29, 64, 0}).ok());
  auto removed = cg.recover();
  CHECK(removed == std::vector<std::string>{"vm-17", "vm-3"});
  CHECK_FALSE(t.exists("/svc/vms/vm-3"));
  CHECK_FALSE(t.exists("/svc/vms/vm-17"));
  CHECK(cg.recover().empty());
}

TEST_CASE("cgroups: /proc/self/cgroup and mountinfo are parsed") {
  CHECK(cgroup2_path_of("12:pids:/\n0::/sandboxd.slice/sandboxd.service\n") == "/sandboxd.slice/sandboxd.service");
  CHECK_FALSE(cgroup2_path_of("12:pids:/\n1:name=systemd:/\n").has_value());
  CHECK(cgroup2_mount("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n") ==
        "/sys/fs/cgroup/unified");
  CHECK_FALSE(cgroup2_mount("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n").has_value());
}
