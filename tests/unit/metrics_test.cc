// The metric registry and its Prometheus text, the audit entry's fields,
// and both fed by the service layer on fake VMs.
#include <doctest/doctest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "daemon/audit.h"
#include "daemon/metrics.h"
#include "daemon/options.h"
#include "daemon/service.h"
#include "fake_vm.h"

using namespace sandbox;
using namespace sandbox::daemon;
using namespace sandbox::test;
using ms = std::chrono::milliseconds;

namespace {

// Series -> value, checking the text format on the way: every sample
// belongs to a family announced by # HELP and # TYPE, no series twice.
std::map<std::string, std::string> parse(const std::string& text) {
  static const std::regex kSample(R"(^([a-z_]+)(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? ([0-9]+(\.[0-9]+)?)$)");
  std::map<std::string, std::string> out;
  std::set<std::string> typed;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      auto rest = line.substr(7);
      auto name = rest.substr(0, rest.find(' '));
      CHECK_MESSAGE(typed.insert(name).second, "family typed twice: " << name);
      continue;
    }
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_match(line, m, kSample), "not a sample line: " << line);
    std::string name = m[1];
    bool known = typed.count(name) > 0;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!known && name.size() > std::strlen(suffix) && name.ends_with(suffix))
        known = typed.count(name.substr(0, name.size() - std::strlen(suffix))) > 0;
    CHECK_MESSAGE(known, "sample of an undeclared family: " << line);
    auto series = line.substr(0, line.rfind(' '));
    CHECK_MESSAGE(out.emplace(series, m[5]).second, "series twice: " << series);
  }
  return out;
}

RunResult result(std::string vm_start, int exit_code = 0, bool timed_out = false, int signal = 0) {
  RunResult r;
  r.vm_start = std::move(vm_start);
  r.exit_code = exit_code;
  r.timed_out = timed_out;
  r.signal = signal;
  r.timing = Timing{30, 1200, 40, 80, 1400};
  r.execution_time_ms = 70;
  return r;
}

}  // namespace

TEST_CASE("metrics: histogram buckets are cumulative and bounded by their upper edge") {
  Histogram h;
  h.observe(0);
  h.observe(10);   // on the edge: the first bucket
  h.observe(11);
  h.observe(400'000);  // past the last bucket: +Inf only
  auto c = h.cumulative();
  CHECK(c[0] == 2);
  CHECK(c[1] == 3);
  CHECK(c.back() == 3);
  CHECK(h.count() == 4);
  CHECK(h.sum_ms() == 400'021);
}

TEST_CASE("metrics: outcomes, paths and refusals land in their series, and the text is well formed") {
  Metrics m;
  MetricsGauges g;
  g.status.pool = {PoolInfo{Language::python, 2, 1, 1, 10, 4}};
  auto before = parse(m.render(g));
  CHECK(before.at(R"(sandboxd_runs_total{kind="run",result="ok"})") == "0");
  CHECK(before.at(R"(sandboxd_errors_total{code="internal"})") == "0");  // every code exists from the start

  m.finished(false, result("boot"));
  m.finished(false, result("pool", 3));
  m.finished(false, result("snapshot", 0, true, 9));
  m.finished(false, result("boot", 0, false, 9));
  m.finished(true, result("", 0));
  RunResult networked = result("pool");
  networked.network.connections = 3;
  networked.network.bytes_in = 5000;
  networked.network.bytes_out = 300;
  networked.network.denied = {{"other.test", 443, "name not allowed"}, {"leak.test", 0, "DNS name not allowed"}};
  m.finished(true, networked);
  m.failed(false);
  m.error(ErrorCode::vm_boot_failed);
  m.denied(ErrorCode::invalid_argument);
  m.boot_failed();
  m.session_opened();
  m.file_transfer(true, 100);
  m.file_transfer(false, 7);
  g.status.vms = 5;
  g.status.max_vms = 8;
  g.vms_leased = 2;
  g.memory_committed_mb = 512;
  g.pool_boot_failures = 2;
  g.snapshot_restores = 6;
  g.layers.requests = {4, 2, 1, 3};  // hit, built, joined, failed
  g.layers.builds = {2, 1};
  g.layers.build_time[0].observe(40'000);
  g.layers.build_time[0].observe(95'500);
  g.layers.build_time[1].observe(3'000);
  g.layers.cache_bytes = 7 << 20;
  g.layers.layers = 2;
  g.layers.building = 1;
  auto v = parse(m.render(g));
  CHECK(v.at(R"(sandboxd_runs_total{kind="run",result="ok"})") == "1");
  CHECK(v.at(R"(sandboxd_runs_total{kind="run",result="exit_nonzero"})") == "1");
  CHECK(v.at(R"(sandboxd_runs_total{kind="run",result="timeout"})") == "1");
  CHECK(v.at(R"(sandboxd_runs_total{kind="run",result="signal"})") == "1");
  CHECK(v.at(R"(sandboxd_runs_total{kind="run",result="error"})") == "1");
  CHECK(v.at(R"(sandboxd_runs_total{kind="session_exec",result="ok"})") == "2");
  CHECK(v.at("sandboxd_network_connections_total") == "3");
  CHECK(v.at(R"(sandboxd_network_bytes_total{direction="in"})") == "5000");
  CHECK(v.at(R"(sandboxd_network_bytes_total{direction="out"})") == "300");
  CHECK(v.at("sandboxd_network_denials_total") == "2");
  CHECK(v.at("sandboxd_timeouts_total") == "1");
  CHECK(v.at("sandboxd_oom_kills_total") == "1");  // SIGKILL without the timeout
  CHECK(v.at("sandboxd_boot_failures_total") == "3");
  CHECK(v.at(R"(sandboxd_errors_total{code="vm_boot_failed"})") == "1");
  CHECK(v.at(R"(sandboxd_denials_total{code="invalid_argument"})") == "1");
  CHECK(v.at("sandboxd_sessions_opened_total") == "1");
  CHECK(v.at(R"(sandboxd_file_bytes_total{direction="upload"})") == "100");
  CHECK(v.at(R"(sandboxd_file_bytes_total{direction="download"})") == "7");
  CHECK(v.at(R"(sandboxd_pool_hits_total{language="python"})") == "10");
  CHECK(v.at(R"(sandboxd_vms{state="leased"})") == "2");
  CHECK(v.at(R"(sandboxd_vms{state="pool_ready"})") == "1");
  CHECK(v.at(R"(sandboxd_vms{state="other"})") == "1");
  CHECK(v.at("sandboxd_memory_committed_bytes") == std::to_string(512ull << 20));
  CHECK(v.at("sandboxd_snapshot_restores_total") == "6");
  // Runs only (not session execs), by path: two cold, one warm, one snapshot.
  CHECK(v.at(R"(sandboxd_run_phase_seconds_count{phase="total",path="cold"})") == "2");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_count{phase="total",path="warm"})") == "1");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_count{phase="boot",path="snapshot"})") == "1");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_sum{phase="total",path="cold"})") == "2.800");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_bucket{phase="total",path="cold",le="1.000"})") == "0");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_bucket{phase="total",path="cold",le="2.500"})") == "2");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_bucket{phase="total",path="cold",le="+Inf"})") == "2");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_bucket{phase="queue",path="cold",le="0.050"})") == "2");
  CHECK(v.at(R"(sandboxd_layer_requests_total{cache="hit"})") == "4");
  CHECK(v.at(R"(sandboxd_layer_requests_total{cache="built"})") == "2");
  CHECK(v.at(R"(sandboxd_layer_requests_total{cache="joined"})") == "1");
  CHECK(v.at(R"(sandboxd_layer_requests_total{cache="failed"})") == "3");
  CHECK(v.at(R"(sandboxd_layer_builds_total{result="ok"})") == "2");
  CHECK(v.at(R"(sandboxd_layer_builds_total{result="failed"})") == "1");
  CHECK(v.at(R"(sandboxd_layer_build_seconds_count{result="ok"})") == "2");
  CHECK(v.at(R"(sandboxd_layer_build_seconds_sum{result="ok"})") == "135.500");
  CHECK(v.at(R"(sandboxd_layer_build_seconds_bucket{result="ok",le="60.000"})") == "1");
  CHECK(v.at(R"(sandboxd_layer_build_seconds_bucket{result="ok",le="120.000"})") == "2");
  CHECK(v.at(R"(sandboxd_layer_build_seconds_bucket{result="failed",le="5.000"})") == "1");
  CHECK(v.at("sandboxd_layer_cache_bytes") == std::to_string(7 << 20));
  CHECK(v.at("sandboxd_layer_cache_layers") == "2");
  CHECK(v.at("sandboxd_layer_builds_in_progress") == "1");
  CHECK(before.at(R"(sandboxd_layer_requests_total{cache="failed"})") == "0");  // a host without layers too
  // Series are fixed: the same set whatever happened.
  CHECK(v.size() == before.size());
}

TEST_CASE("metrics: label values and help text are escaped") {
  PromText t;
  t.family("x_total", "counter", "a\\b\nc");
  t.sample("x_total", {{"k", "q\"b\\n\nz"}}, 1);
  CHECK(t.take() == "# HELP x_total a\\\\b\\nc\n# TYPE x_total counter\nx_total{k=\"q\\\"b\\\\n\\nz\"} 1\n");
}

TEST_CASE("audit: fixed message ids, the fields filters use, escaped values, JSON for stderr") {
  std::set<std::string_view> ids;
  for (auto k : {AuditKind::run, AuditKind::session_open, AuditKind::session_exec, AuditKind::session_close,
                 AuditKind::file_write, AuditKind::file_read, AuditKind::file_list, AuditKind::denial}) {
    CHECK(audit_message_id(k).size() == 32);
    ids.insert(audit_message_id(k));
  }
  CHECK(ids.size() == 8);
  AuditEntry e;
  e.kind = AuditKind::file_write;
  e.uid = 1000;
  e.request = "file_write";
  e.language = Language::python;
  e.result = "ok";
  e.numbers = {{"BYTES", 42}};
  e.vm = "vm-3";
  e.path = "a\nMESSAGE_ID=forged";
  auto f = audit_fields(e);
  std::map<std::string, std::string> m(f.begin(), f.end());
  CHECK(m.at("MESSAGE_ID") == audit_message_id(AuditKind::file_write));
  CHECK(m.at("SANDBOXD_AUDIT") == "file_write");
  CHECK(m.at("SANDBOXD_UID") == "1000");
  CHECK(m.at("SANDBOXD_LANGUAGE") == "python");
  CHECK(m.at("SANDBOXD_BYTES") == "42");
  CHECK(m.at("SANDBOXD_VM") == "vm-3");
  CHECK(m.at("SANDBOXD_PATH") == "a\\x0aMESSAGE_ID=forged");  // no field can be forged through a value
  CHECK(m.count("SANDBOXD_ERROR") == 0);
  auto json = audit_json({{"A", "x\"y"}, {"B", "\x01"}});
  CHECK(json == "{\"A\":\"x\\\"y\",\"B\":\"\\u0001\"}");
}

namespace {

struct Stack {
  Loop loop;
  FakeFactory factory{loop.get()};
  std::unique_ptr<Manager> manager;
  std::unique_ptr<Service> service;
  Stack() {
    set_audit_target(AuditTarget::stderr_only);
    auto o = options_from(Config{}, RuntimeFacts{});
    o.manager.max_vms = 4;
    o.manager.limits = {8, 4};
    o.manager.lease.queue_timeout = ms(5000);
    o.manager.pool.size = {0, 0, 0};
    manager = std::make_unique<Manager>(loop.get(), factory, nullptr, o.manager);
    o.service.access = {{1000}, {}, 0};
    service = std::make_unique<Service>(*manager, o.service);
  }
  ~Stack() {
    service.reset();
    manager.reset();
    loop.settle();
  }
  std::map<std::string, std::string> metrics(Service::Peer& peer, const std::shared_ptr<Collect>& sink) {
    service->handle(peer, proto::MetricsRequest{99});
    auto* m = sink->last<proto::MetricsText>();
    REQUIRE(m);
    CHECK(m->id == 99);
    return parse(m->text);
  }
};

}  // namespace

TEST_CASE("metrics: the service layer counts runs and refusals, and answers metrics_request") {
  Stack s;
  auto sink = std::make_shared<Collect>();
  auto peer = s.service->connect(Caller{1000, 1000, 1}, sink);
  auto v0 = s.metrics(*peer, sink);
  CHECK(v0.at(R"(sandboxd_runs_total{kind="run",result="ok"})") == "0");

  s.service->handle(*peer, proto::Run{1, RunRequest{Language::python, "print(1)", {}, ms(0), 0}});
  FakeVm* vm = wait_busy(s.loop, s.factory);
  REQUIRE(vm);
  auto during = s.metrics(*peer, sink);
  CHECK(during.at(R"(sandboxd_vms{state="leased"})") == "1");
  CHECK(during.at("sandboxd_runs_active") == "1");
  CHECK(during.at("sandboxd_memory_committed_bytes") == std::to_string(256ull << 20));
  vm->finish(0);
  REQUIRE(s.loop.until([&] { return sink->last<proto::Finished>() != nullptr; }));
  s.service->handle(*peer, proto::Run{2, RunRequest{Language::python, "", {}, ms(0), 0}});  // empty code
  CHECK(!s.service->authorize(Caller{4242, 4242, 1}, std::nullopt).ok());

  auto v = s.metrics(*peer, sink);
  CHECK(v.at(R"(sandboxd_runs_total{kind="run",result="ok"})") == "1");
  CHECK(v.at(R"(sandboxd_run_phase_seconds_count{phase="total",path="cold"})") == "1");
  CHECK(v.at(R"(sandboxd_denials_total{code="invalid_argument"})") == "1");
  CHECK(v.at(R"(sandboxd_denials_total{code="permission_denied"})") == "1");
  REQUIRE(s.loop.until([&] { return s.factory.alive == 0; }));
  CHECK(s.metrics(*peer, sink).at("sandboxd_memory_committed_bytes") == "0");
}
