#include <doctest/doctest.h>
#include <msgpack.hpp>

#include <random>

#include "common/limits.h"
#include "common/protocol.h"

using namespace sandbox;
using namespace sandbox::proto;

namespace {

template <class T>
T round_trip(const T& in) {
  auto decoded = decode(encode(in));
  REQUIRE_MESSAGE(decoded.ok(), decoded.error().message);
  REQUIRE(std::holds_alternative<T>(*decoded));
  return std::get<T>(*decoded);
}

// Builds a payload from a msgpack map given as alternating keys and values.
template <class... Args>
std::string pack_map(Args&&... kv) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  p.pack_map(sizeof...(kv) / 2);
  (p.pack(kv), ...);
  return std::string(buf.data(), buf.size());
}

std::string error_of(std::string_view payload) {
  auto r = decode(payload);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::invalid_argument);
  return r.error().message;
}

}  // namespace

TEST_CASE("every message survives a round trip") {
  RunRequest run{7, Language::javascript, std::string("console.log(1)\0x", 16), {{"A", "1"}, {"B", ""}}, 1500, 512};
  auto r = round_trip(run);
  CHECK(r.id == 7);
  CHECK(r.language == Language::javascript);
  CHECK(r.code == run.code);
  CHECK(r.env == run.env);
  CHECK(r.timeout_ms == 1500);
  CHECK(r.memory_mb == 512);

  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
  auto o = round_trip(Output{3, Stream::err, all_bytes});
  CHECK(o.stream == Stream::err);
  CHECK(o.data == all_bytes);

  RunResult res;
  res.id = 9;
  res.stdout_data = all_bytes;
  res.stderr_data = "e";
  res.stdout_truncated = true;
  res.exit_code = -1;
  res.signal = 9;
  res.timed_out = true;
  res.execution_time_ms = 12;
  res.timing = {1, 2, 3, 6};
  res.cpu_time_ms = 77;
  res.memory_peak_mb = 180;
  res.accelerator = "tcg";
  res.vm_start = "snapshot";
  auto rr = round_trip(res);
  CHECK(rr.stdout_data == all_bytes);
  CHECK(rr.stdout_truncated);
  CHECK_FALSE(rr.stderr_truncated);
  CHECK(rr.exit_code == -1);
  CHECK(rr.signal == 9);
  CHECK(rr.timed_out);
  CHECK(rr.timing.total_ms == 6);
  CHECK(rr.accelerator == "tcg");
  CHECK(rr.cpu_time_ms == 77);
  CHECK(rr.vm_start == "snapshot");
  CHECK(rr.memory_peak_mb == 180);

  auto e = round_trip(ErrorReply{4, ErrorCode::capacity, "full"});
  CHECK(e.code == ErrorCode::capacity);
  CHECK(e.message == "full");
  auto h = round_trip(Hello{kProtocolVersion, "6.1.0", "python"});
  CHECK(h.kernel == "6.1.0");
  CHECK(h.prestarted == "python");
  CHECK(round_trip(Ping{9}).seq == 9);
  CHECK(round_trip(SnapshotsRequest{3, true}).drop);
  auto sl = round_trip(SnapshotList{4, {{"abc", Language::javascript, 512, 1 << 20}}});
  REQUIRE(sl.snapshots.size() == 1);
  CHECK(sl.snapshots[0].key == "abc");
  CHECK(sl.snapshots[0].language == Language::javascript);
  CHECK(sl.snapshots[0].bytes == 1 << 20);
  auto rs = round_trip(Resume{std::string(64, '\xff'), 123, "sandbox-1a", true});
  CHECK(rs.warm_up);
  CHECK(rs.seed.size() == 64);
  CHECK(rs.realtime_ns == 123);
  CHECK(rs.hostname == "sandbox-1a");
  CHECK(round_trip(Pong{10}).seq == 10);
  CHECK(round_trip(StatusRequest{11}).id == 11);
  Status st{12, "0.1.0", "tcg", "no kvm", 3, 8, 1, 2, 4,
            {{Language::python, 2, 1, 1, 40, 3}, {Language::raw, 1, 1, 0, 0, 0}}};
  auto st2 = round_trip(st);
  CHECK(st2.accelerator_reason == "no kvm");
  CHECK(st2.max_vms == 8);
  CHECK(st2.runs_queued == 2);
  CHECK(st2.sessions == 4);
  REQUIRE(st2.pool.size() == 2);
  CHECK(st2.pool[0].hits == 40);
  CHECK(st2.pool[1].language == Language::raw);
  auto x = round_trip(Exec{5, Language::raw, "echo", {}, 100, 2000, 1 << 20, 100 << 10, 256});
  CHECK(x.language == Language::raw);
  CHECK(x.grace_ms == 2000);
  CHECK(x.stdout_limit == 1 << 20);
  CHECK(x.stderr_limit == 100 << 10);
  CHECK(x.pids_max == 256);
  auto d = round_trip(ExecDone{5, 137, 9, true, 42, true, false});
  CHECK(d.exit_code == 137);
  CHECK(d.timed_out);
  CHECK(d.stdout_truncated);
  CHECK_FALSE(d.stderr_truncated);
}

TEST_CASE("decode rejects malformed messages with a reason") {
  CHECK(error_of("") .find("malformed") != std::string::npos);
  CHECK(error_of(pack_map("type", "launch_missiles")).find("unknown message type") != std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "version", 1)).find("missing key 'kernel'") != std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "version", 1, "kernel", "k", "prestarted", "", "extra", 1))
            .find("unknown key 'extra'") != std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "version", "1", "kernel", "k", "prestarted", "")).find("'version' is not") !=
        std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "type", "hello", "version", 1, "kernel", "k")).find("duplicate key") !=
        std::string::npos);
  CHECK(error_of(pack_map("type", "exec", "id", 1, "language", "cobol", "code", "x", "env",
                          std::map<std::string, std::string>{}, "timeout_ms", 1, "grace_ms", 1, "stdout_limit", 1,
                          "stderr_limit", 1, "pids_max", 1))
            .find("unknown language") != std::string::npos);
  CHECK(error_of(pack_map("type", "exec_done", "id", 1, "exit_code", -5000000000LL, "signal", 0, "timed_out", false,
                          "duration_ms", 1))
            .find("out of range") != std::string::npos);
  // Not a map at all, and a map with a non-string key.
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::vector<int>{1, 2, 3});
  CHECK(error_of({buf.data(), buf.size()}).find("not a map") != std::string::npos);
  CHECK(error_of(pack_map(1, 2)).find("non-string key") != std::string::npos);
}

TEST_CASE("decode enforces size limits and trailing bytes") {
  std::string big(limits::kMaxCodeBytes + 1, 'x');
  auto payload = encode(Exec{1, Language::python, big, {}, 1000});
  CHECK(error_of(payload).find("'code' longer than") != std::string::npos);

  EnvList env;
  for (size_t i = 0; i <= limits::kMaxEnvVars; ++i) env.emplace_back("V" + std::to_string(i), "x");
  CHECK(error_of(encode(Exec{1, Language::python, "x", env, 1000})).find("env vars") != std::string::npos);

  auto ok_payload = encode(Hello{1, "k", ""});
  CHECK(error_of(ok_payload + "x").find("trailing bytes") != std::string::npos);
  // Truncated input is an error, not a crash or a hang.
  for (size_t n = 0; n < ok_payload.size(); ++n) CHECK_FALSE(decode(ok_payload.substr(0, n)).ok());
}

TEST_CASE("deep nesting and huge declared counts are refused") {
  // 100 nested single-element arrays.
  std::string deep(100, '\x91');
  deep.push_back('\x01');
  CHECK_FALSE(decode(deep).ok());
  // A map header that claims 2^32-1 entries with no bytes behind it.
  std::string huge = "\xdf\xff\xff\xff\xff";
  CHECK_FALSE(decode(huge).ok());
  // A bin header claiming 4 GiB.
  std::string bin = "\xc6\xff\xff\xff\xff";
  CHECK_FALSE(decode(bin).ok());
}

TEST_CASE("random bytes never crash the decoder") {
  std::mt19937 rng(12345);
  auto valid = encode(RunRequest{1, Language::python, "print(1)", {{"A", "b"}}, 1000, 256});
  for (int i = 0; i < 20000; ++i) {
    std::string s;
    if (i % 2) {
      s = valid;
      for (int k = 0; k < 3; ++k) s[rng() % s.size()] = static_cast<char>(rng());
    } else {
      s.resize(rng() % 64);
      for (auto& c : s) c = static_cast<char>(rng());
    }
    (void)decode(s);
  }
  CHECK(decode(valid).ok());
}
