// Integration suite entry point: runs the cases, then checks that nothing
// they started outlived them (QEMU processes, temp files, daemon state).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "harness.h"

using namespace sandbox::test;

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  auto qemu_before = processes_named("qemu-system");
  auto tmp_before = list_dir("/tmp");

  doctest::Context ctx(argc, argv);
  int rc = ctx.run();
  if (ctx.shouldExit()) return rc;

  run_suite_end();
  int leaks = 0;
  if (auto* d = TestDaemon::shared_if_started()) {
    if (!d->wait_children_at_most(0, std::chrono::seconds(15))) {
      std::fprintf(stderr, "LEAK: sandboxd still has %zu child processes after the suite\n", d->children().size());
      ++leaks;
    }
    // The snapshot cache is meant to outlive runs; a half-written entry is not.
    auto state = list_dir(d->dir() + "/state");
    std::erase(state, std::string("snapshots"));
    for (auto& e : list_dir(d->dir() + "/state/snapshots"))
      if (e.starts_with(".")) state.push_back("snapshots/" + e);
    // The layer cache, like the snapshot cache, outlives runs; a build's
    // temp file does not.
    std::erase(state, std::string("layers"));
    for (auto& e : list_dir(d->dir() + "/state/layers"))
      if (e.ends_with(".tmp")) state.push_back("layers/" + e);
    // vms/ holds one record per live QEMU: empty once every VM is gone.
    std::erase(state, std::string("vms"));
    for (auto& e : list_dir(d->dir() + "/state/vms")) state.push_back("vms/" + e);
    if (!state.empty()) {
      std::fprintf(stderr, "LEAK: files left in the state directory: %s\n", join(state).c_str());
      ++leaks;
    }
    int status = d->stop();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "FAIL: sandboxd did not exit cleanly on SIGTERM (wait status %d)\n%s\n", status,
                   d->log().c_str());
      ++leaks;
    }
    if (std::filesystem::exists(d->socket())) {
      std::fprintf(stderr, "LEAK: the control socket was not removed at shutdown\n");
      ++leaks;
    }
    delete d;
  }
  // QEMU processes: none that did not exist before the suite.
  std::vector<pid_t> extra;
  for (int i = 0; i < 100; ++i) {
    extra.clear();
    for (pid_t p : processes_named("qemu-system"))
      if (std::find(qemu_before.begin(), qemu_before.end(), p) == qemu_before.end()) extra.push_back(p);
    if (extra.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!extra.empty()) {
    std::fprintf(stderr, "LEAK: %zu QEMU processes outlived the suite\n", extra.size());
    ++leaks;
  }
  // Only names that sandboxd, its tests or QEMU make: other programs on the
  // machine may use /tmp meanwhile.
  std::vector<std::string> new_tmp;
  for (auto& e : list_dir("/tmp"))
    if (!std::binary_search(tmp_before.begin(), tmp_before.end(), e) &&
        (e.starts_with("sandbox") || e.starts_with("qemu") || e.starts_with("vl.")))
      new_tmp.push_back(e);
  if (!new_tmp.empty()) {
    std::fprintf(stderr, "LEAK: new entries in /tmp after the suite: %s\n", join(new_tmp).c_str());
    ++leaks;
  }
  std::printf("leak check: QEMU processes before %zu, new after %zu; new /tmp entries %zu\n", qemu_before.size(),
              extra.size(), new_tmp.size());
  return rc != 0 ? rc : leaks ? 1 : 0;
}
