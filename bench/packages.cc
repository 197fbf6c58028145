#include "bench/packages.h"

#include <unistd.h>

#include <cstdio>

#include "bench/harness.h"

namespace sandbox::bench {
namespace {

// The loopback index and its DNS name, as the integration tests run them.
class Index {
 public:
  Index() {
    char tmpl[] = "/tmp/sandbox-bench-index.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    fs::create_directories(dir_ + "/hosts");
    std::string src = SANDBOXD_SOURCE_DIR "/tests/integration/";
    if (run_quiet({"/usr/bin/python3", src + "make_index.py", dir_ + "/index"}) != 0) return;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    stdin_.reset(p[1]);
    unique_fd read_end(p[0]);
    auto proc = Process::spawn({{"/usr/bin/python3", src + "net_hosts.py", dir_ + "/hosts", "--index=" + dir_ + "/index",
                                 "pypi.test=127.0.0.9"},
                                {{0, read_end.get()}},
                                true});
    if (!proc) return;
    proc_ = std::move(*proc);
    for (int i = 0; i < 300 && !fs::exists(dir_ + "/hosts/ports"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream in(dir_ + "/hosts/ports");
    std::string ports((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto num = [&](const std::string& key) {
      auto at = ports.find("\"" + key + "\": ");
      return at == std::string::npos ? 0 : std::atoi(ports.c_str() + at + key.size() + 4);
    };
    dns = num("dns");
    https = num("https");
  }
  ~Index() {
    stdin_.reset();
    proc_.kill_and_wait();
    fs::remove_all(dir_);
  }
  bool ok() const { return dns > 0 && https > 0; }
  std::string ca() const { return dir_ + "/hosts/ca.pem"; }
  int dns = 0, https = 0;

 private:
  std::string dir_;
  unique_fd stdin_;
  Process proc_;
};

}  // namespace

int run_packages(const PackagesOptions& o) {
  Index index;
  if (!index.ok()) {
    std::fprintf(stderr, "sandbox-bench: the loopback index did not start (python3, openssl and the source tree needed)\n");
    return 1;
  }
  Daemon d(o.bin_dir, o.images,
           {"--pool-python", "0", "--pool-javascript", "0", "--pool-raw", "0", "--snapshots", "on",
            "--network-resolver", "127.0.0.1:" + std::to_string(index.dns), "--network-allowed-ranges", "127.0.0.0/8",
            "--extra-ca-file", index.ca(), "--python-index-url",
            "https://pypi.test:" + std::to_string(index.https) + "/simple"});
  Client c = d.client();
  auto run = [&](bool packages) {
    RunRequest r;
    r.language = Language::python;
    r.code = packages ? "import mypkg\nprint(mypkg.answer())\n" : "print(42)\n";
    r.timeout = std::chrono::seconds(60);
    if (packages) r.packages = {"mypkg==1.0"};
    return c.run(r);
  };
  std::printf("sandbox-bench --packages: a Python layer (mypkg==1.0 and its dependency) from a loopback index\n\n");
  auto t = Clock::now();
  auto cold = run(true);
  if (!cold.ok()) {
    std::fprintf(stderr, "sandbox-bench: the first run with packages failed: %s\n", cold.error().describe().c_str());
    return 1;
  }
  std::printf("  cold: build and first run      %s (build %s, cache %s)\n", fmt(ms_since(t)).c_str(),
              fmt(static_cast<double>(cold->layer.build_ms)).c_str(), cold->layer.cache.c_str());
  // Both paths restore: one run without packages starts its template too.
  (void)run(false);
  for (int i = 0; i < 1200; ++i) {
    auto s = c.snapshots();
    if (s.ok() && s->size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Stats with, without;
  std::string starts;
  for (int i = 0; i < o.samples; ++i) {
    for (bool packages : {false, true}) {
      auto t0 = Clock::now();
      auto r = run(packages);
      double ms = ms_since(t0);
      if (!r.ok() || r->stdout_data != "42\n") {
        std::fprintf(stderr, "sandbox-bench: a run failed: %s\n", r.ok() ? r->stderr_data.c_str() : r.error().describe().c_str());
        return 1;
      }
      if (r->vm_start != "snapshot") starts = r->vm_start;
      (packages ? with : without).v.push_back(ms);
    }
  }
  std::printf("  run, no packages (snapshot)    p50 %s  p95 %s\n", fmt(without.median()).c_str(), fmt(without.pct(95)).c_str());
  std::printf("  run, cached layer (snapshot)   p50 %s  p95 %s\n", fmt(with.median()).c_str(), fmt(with.pct(95)).c_str());
  std::printf("  ratio cached layer / none      %.2fx (target <= 1.5x)\n", with.median() / without.median());
  if (!starts.empty()) std::printf("  note: some runs did not restore (%s): the figures mix paths\n", starts.c_str());
  return 0;
}

}  // namespace sandbox::bench
