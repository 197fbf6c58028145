// Warm pool and scheduler, each against its own daemon configuration.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <future>
#include <thread>

#include "harness.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
using Clock = std::chrono::steady_clock;

namespace {

RunRequest req(Language l, std::string code, int timeout_ms = 30'000) {
  return make_request(l, std::move(code), timeout_ms);
}

// Waits until the pool for `l` has `n` ready VMs and nothing booting.
bool wait_pool_ready(const Client& c, Language l, uint32_t n, std::chrono::seconds deadline = std::chrono::seconds(90)) {
  auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    auto st = c.status();
    if (st.ok())
      for (const auto& p : st->pool)
        if (p.language == l && p.ready >= n && p.booting == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

PoolInfo pool_of(const Client& c, Language l) {
  auto st = c.status();
  REQUIRE(st.ok());
  for (const auto& p : st->pool)
    if (p.language == l) return p;
  FAIL("no pool entry");
  return {};
}

}  // namespace

TEST_CASE("warm pool: hits, misses, refills and no state between runs") {
  TestDaemon d;
  REQUIRE(d.start({"--pool-python", "1", "--pool-health-interval-ms", "500"}));
  Client c(d.socket());
  REQUIRE(wait_pool_ready(c, Language::python, 1));

  // A hit: no boot in the run's timing, and it leaves marks behind.
  auto first = c.run(req(Language::python,
                         "import os\nopen('/tmp/mark','w').write('x')\nopen(os.path.expanduser('~/mark'),'w').write('x')\n"
                         "os.environ['LEAK']='1'\nprint('written')"));
  REQUIRE_MESSAGE(first.ok(), first.error().describe());
  CHECK(first->warm_pool_hit);
  CHECK(first->timing.boot_ms == 0);
  CHECK(first->stdout_data == "written\n");

  // Straight away the pool is still refilling: a miss that boots.
  auto second = c.run(req(Language::python, "print('cold')"));
  REQUIRE_MESSAGE(second.ok(), second.error().describe());
  bool second_warm = second->warm_pool_hit;
  CHECK(second->stdout_data == "cold\n");

  // Refilled: a hit that finds nothing of the first run.
  REQUIRE(wait_pool_ready(c, Language::python, 1));
  auto third = c.run(req(Language::python,
                         "import os\nprint(os.path.exists('/tmp/mark'), os.path.exists(os.path.expanduser('~/mark')), "
                         "'LEAK' in os.environ)"));
  REQUIRE_MESSAGE(third.ok(), third.error().describe());
  CHECK(third->warm_pool_hit);
  CHECK(third->stdout_data == "False False False\n");

  // A warm VM also serves a run with its own environment.
  REQUIRE(wait_pool_ready(c, Language::python, 1));
  auto with_env = req(Language::python, "import os\nprint(os.environ['GREETING'], open('/proc/self/environ','rb').read().count(b'GREETING='))");
  with_env.env = {{"GREETING", "hello"}};
  auto fourth = c.run(with_env);
  REQUIRE_MESSAGE(fourth.ok(), fourth.error().describe());
  CHECK(fourth->warm_pool_hit);
  CHECK(fourth->stdout_data == "hello 1\n");

  // Other memory sizes are not served warm.
  REQUIRE(wait_pool_ready(c, Language::python, 1));
  auto big = req(Language::python, "print(1)");
  big.memory_mb = 384;
  auto fifth = c.run(big);
  REQUIRE(fifth.ok());
  CHECK_FALSE(fifth->warm_pool_hit);

  auto p = pool_of(c, Language::python);
  CHECK(p.hits == (second_warm ? 4u : 3u));
  CHECK(p.misses == (second_warm ? 0u : 1u));
  auto ctl = run_command({SANDBOXCTL_BIN, "pool", "--socket", d.socket()});
  CHECK(ctl.exit_code == 0);
  CHECK(ctl.out.find("python") != std::string::npos);
  CHECK(ctl.out.find("HIT RATE") != std::string::npos);
}

TEST_CASE("warm pool: a VM that dies is replaced") {
  TestDaemon d;
  REQUIRE(d.start({"--pool-raw", "1", "--pool-health-interval-ms", "500"}));
  Client c(d.socket());
  REQUIRE(wait_pool_ready(c, Language::raw, 1));
  auto kids = d.children();
  REQUIRE(kids.size() == 1);
  // The daemon started this QEMU; kill it by pid as a crash would.
  REQUIRE(::kill(kids[0], SIGKILL) == 0);
  auto until = Clock::now() + std::chrono::seconds(60);
  bool replaced = false;
  while (Clock::now() < until && !replaced) {
    auto now_kids = d.children();
    replaced = now_kids.size() == 1 && now_kids[0] != kids[0] && pool_of(c, Language::raw).ready == 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(replaced);
  CHECK(d.log().find("warm pool: replacing a VM") != std::string::npos);
  auto r = c.run(req(Language::raw, "echo fine"));
  REQUIRE(r.ok());
  CHECK(r->warm_pool_hit);
  CHECK(r->stdout_data == "fine\n");
}

TEST_CASE("scheduler: a full daemon queues, then fails with capacity at the deadline") {
  TestDaemon d;
  REQUIRE(d.start({"--max-concurrent-vms", "1", "--max-runs-per-uid", "10", "--queue-timeout-ms", "1000"}));
  Client c(d.socket());
  c.set_capacity_wait(std::chrono::milliseconds(0));  // the answer itself is what is tested
  auto busy = std::async(std::launch::async, [&] { return c.run(req(Language::raw, "sleep 8; echo done", 20'000)); });
  REQUIRE(d.wait_children_at_most(1, std::chrono::seconds(5)));
  auto until = Clock::now() + std::chrono::seconds(10);
  while (d.children().empty() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto start = Clock::now();
  auto refused = c.run(req(Language::raw, "echo never"));
  auto waited = Clock::now() - start;
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::capacity);
  CHECK(error_code_retryable(refused.error().code));
  CHECK(refused.error().message.find("queue deadline") != std::string::npos);
  CHECK(waited >= std::chrono::milliseconds(900));
  auto st = c.status();
  REQUIRE(st.ok());
  CHECK(st->max_vms == 1);
  auto first = busy.get();
  REQUIRE(first.ok());
  CHECK(first->stdout_data == "done\n");
}

TEST_CASE("scheduler: the per-uid limit keeps one caller from taking every slot") {
  TestDaemon d;
  REQUIRE(d.start({"--max-runs-per-uid", "1"}));
  Client c(d.socket());
  c.set_capacity_wait(std::chrono::milliseconds(0));
  auto busy = std::async(std::launch::async, [&] { return c.run(req(Language::raw, "sleep 6; echo done", 20'000)); });
  auto until = Clock::now() + std::chrono::seconds(10);
  while (d.children().empty() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto refused = c.run(req(Language::raw, "echo never"));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == ErrorCode::capacity);
  CHECK(refused.error().message.find("per-user limit") != std::string::npos);
  REQUIRE(busy.get().ok());
}

TEST_CASE("shutdown drains: a running run finishes, then nothing is left") {
  TestDaemon d;
  REQUIRE(d.start({"--pool-python", "1", "--shutdown-grace-ms", "20000"}));
  Client c(d.socket());
  REQUIRE(wait_pool_ready(c, Language::python, 1));
  auto running = std::async(std::launch::async, [&] {
    return c.run(req(Language::raw, "sleep 3; echo finished", 30'000));
  });
  auto until = Clock::now() + std::chrono::seconds(15);
  while (d.children().size() < 2 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto vms = d.children();
  REQUIRE(vms.size() == 2);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  int status = d.stop(std::chrono::seconds(40));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  auto r = running.get();
  REQUIRE_MESSAGE(r.ok(), r.error().describe());
  CHECK(r->stdout_data == "finished\n");
  for (pid_t p : vms) CHECK_MESSAGE(::kill(p, 0) != 0, "QEMU " << p << " outlived the daemon");
  CHECK(d.log().find("draining 1 runs") != std::string::npos);
}
