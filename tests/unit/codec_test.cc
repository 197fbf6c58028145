#include <doctest/doctest.h>
#include <msgpack.hpp>

#include <random>

#include <sandbox/limits.h>

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
  RunRequest req{Language::javascript, std::string("console.log(1)\0x", 16), {{"A", "1"}, {"B", ""}},
                 std::chrono::milliseconds(1500), 512};
  auto r = round_trip(Run{7, req});
  CHECK(r.id == 7);
  CHECK(r.request.language == Language::javascript);
  CHECK(r.request.code == req.code);
  CHECK(r.request.env == req.env);
  CHECK(r.request.timeout.count() == 1500);
  CHECK(r.request.memory_mb == 512);

  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
  auto o = round_trip(Output{3, Stream::err, all_bytes});
  CHECK(o.stream == Stream::err);
  CHECK(o.data == all_bytes);

  Finished fin;
  fin.id = 9;
  auto& res = fin.result;
  res.language = Language::raw;
  res.stdout_data = all_bytes;
  res.stderr_data = "e";
  res.stdout_truncated = true;
  res.exit_code = -1;
  res.signal = 9;
  res.timed_out = true;
  res.execution_time_ms = 12;
  res.timing = {1, 2, 5, 3, 6};
  res.cpu_time_ms = 77;
  res.memory_peak_mb = 180;
  res.accelerator = "tcg";
  res.vm_start = "snapshot";
  auto rr = round_trip(fin);
  CHECK(rr.id == 9);
  CHECK(rr.result.language == Language::raw);
  CHECK(rr.result.stdout_data == all_bytes);
  CHECK(rr.result.stdout_truncated);
  CHECK_FALSE(rr.result.stderr_truncated);
  CHECK(rr.result.exit_code == -1);
  CHECK(rr.result.signal == 9);
  CHECK(rr.result.timed_out);
  CHECK(rr.result.timing.startup_ms == 5);
  CHECK(rr.result.timing.total_ms == 6);
  CHECK(rr.result.accelerator == "tcg");
  CHECK(rr.result.cpu_time_ms == 77);
  CHECK(rr.result.vm_start == "snapshot");
  CHECK(rr.result.memory_peak_mb == 180);

  auto e = round_trip(ErrorReply{4, ErrorCode::capacity, "full"});
  CHECK(e.code == ErrorCode::capacity);
  CHECK(e.message == "full");
  auto h = round_trip(Hello{kProtocolVersion, "6.1.0", "python"});
  CHECK(h.kernel == "6.1.0");
  CHECK(h.prestarted == "python");
  CHECK(round_trip(Ping{9}).seq == 9);
  CHECK(round_trip(Cancel{12}).id == 12);
  CHECK(round_trip(SnapshotsRequest{3, true}).drop);
  auto sl = round_trip(SnapshotList{4, {{"abc", Language::javascript, 512, 1 << 20}}});
  REQUIRE(sl.snapshots.size() == 1);
  CHECK(sl.snapshots[0].key == "abc");
  CHECK(sl.snapshots[0].language == Language::javascript);
  CHECK(sl.snapshots[0].bytes == 1 << 20);
  auto rs = round_trip(Resume{std::string(64, '\xff'), 123, "sandbox-1a", true, 256});
  CHECK(rs.warm_up);
  CHECK(rs.pids_max == 256);
  CHECK(rs.seed.size() == 64);
  CHECK(rs.realtime_ns == 123);
  CHECK(rs.hostname == "sandbox-1a");
  CHECK(round_trip(Pong{10}).seq == 10);
  CHECK(round_trip(StatusRequest{11}).id == 11);
  DaemonStatus ds{"0.1.0", "tcg", "no kvm", 3, 8, 1, 2, 4, 6,
                  {{Language::python, 2, 1, 1, 40, 3}, {Language::raw, 1, 1, 0, 0, 0}}, "none"};
  auto st = round_trip(Status{12, ds}).status;
  CHECK(st.accelerator_reason == "no kvm");
  CHECK(st.max_vms == 8);
  CHECK(st.runs_queued == 2);
  CHECK(st.sessions == 4);
  CHECK(st.runs_per_uid == 6);
  REQUIRE(st.pool.size() == 2);
  CHECK(st.pool[0].hits == 40);
  CHECK(st.pool[1].language == Language::raw);
  CHECK(st.host_limits == "none");
  Exec ex;
  ex.id = 5;
  ex.language = Language::raw;
  ex.code = "echo";
  ex.timeout_ms = 100;
  ex.startup_timeout_ms = 9000;
  ex.grace_ms = 2000;
  ex.stdout_limit = 1 << 20;
  ex.stderr_limit = 100 << 10;
  ex.pids_max = 256;
  auto x = round_trip(ex);
  CHECK(x.language == Language::raw);
  CHECK(x.startup_timeout_ms == 9000);
  CHECK(x.grace_ms == 2000);
  CHECK(x.stdout_limit == 1 << 20);
  CHECK(x.pids_max == 256);
  auto d = round_trip(ExecDone{5, 137, 9, true, 30, 42, true, false, false});
  CHECK(d.exit_code == 137);
  CHECK(d.timed_out);
  CHECK(d.startup_ms == 30);
  CHECK(d.duration_ms == 42);
  CHECK(d.stdout_truncated);
  CHECK_FALSE(d.stderr_truncated);
  SessionOptions so{Language::python, {{"K", "v"}}, std::chrono::milliseconds(5000), 384,
                    std::chrono::milliseconds(60'000)};
  auto sc = round_trip(SessionCreate{13, so}).options;
  CHECK(sc.memory_mb == 384);
  CHECK(sc.idle_timeout.count() == 60'000);
  CHECK(sc.env == so.env);
  auto fw = round_trip(FileWrite{14, "s-1", "dir/a.txt", 99, true});
  CHECK(fw.path == "dir/a.txt");
  CHECK(fw.size == 99);
  CHECK(fw.executable);
  auto fl = round_trip(FileList{15, {{{"a", false, 3}, {"d", true, 0}}, true}});
  REQUIRE(fl.listing.entries.size() == 2);
  CHECK(fl.listing.entries[1].is_dir);
  CHECK(fl.listing.truncated);
  CHECK(round_trip(ImagesRequest{16}).id == 16);
  CHECK(round_trip(MetricsRequest{18}).id == 18);
  CHECK(round_trip(MetricsText{19, "a_total 1\n"}).text == "a_total 1\n");
  CHECK_FALSE(decode(encode(MetricsText{1, std::string(proto::kMaxMetricsBytes + 1, 'x')})).ok());
  ImagesInfo ii{"/var/lib/sandboxd/images",
                {{"kernel", "vmlinux", std::string(64, 'a')}, {"initrd", "initramfs.cpio", std::string(64, 'b')}},
                "6.1.0-37-amd64",
                "sandboxd guest images",
                {{"python3", "python3.11", "3.11.2-6+deb12u6"}},
                {{"bash", "5.2.15-2+b7"}, {"python3.11", "3.11.2-6+deb12u6"}},
                std::string(64, 'c')};
  auto il = round_trip(ImageList{17, ii}).images;
  CHECK(il.directory == ii.directory);
  REQUIRE(il.images.size() == 2);
  CHECK(il.images[1].file == "initramfs.cpio");
  CHECK(il.kernel_release == "6.1.0-37-amd64");
  REQUIRE(il.tools.size() == 1);
  CHECK(il.tools[0].package == "python3.11");
  REQUIRE(il.packages.size() == 2);
  CHECK(il.packages[0].version == "5.2.15-2+b7");
  CHECK(il.packages_sha256 == ii.packages_sha256);
}

TEST_CASE("the largest image list a daemon may send decodes") {
  ImagesInfo ii;
  ii.images.assign(proto::kMaxImageEntries, {"kernel", std::string(limits::kMaxPathBytes, 'f'), std::string(64, 'a')});
  ii.tools.assign(proto::kMaxToolEntries, {std::string(limits::kMaxNameBytes, 't'), "p", "1"});
  ii.packages.assign(proto::kMaxPackageEntries,
                     {std::string(limits::kMaxNameBytes, 'n'), std::string(limits::kMaxNameBytes, 'v')});
  auto bytes = encode(ImageList{1, ii});
  CHECK(bytes.size() < limits::kMaxFrameBytes);
  auto m = decode(bytes);
  REQUIRE_MESSAGE(m.ok(), m.error().message);
  CHECK(std::get<ImageList>(*m).images.packages.size() == proto::kMaxPackageEntries);
  ii.packages.push_back({"one", "more"});
  CHECK_FALSE(decode(encode(ImageList{1, ii})).ok());
}

TEST_CASE("the wire names come from the tables") {
  CHECK(type_name(Run{}) == "run");
  CHECK(type_name(Finished{}) == "result");
  CHECK(request_id_of(SessionExec{44, "s", "x", 0}) == 44);
  CHECK(request_id_of(Ping{5}) == 0);
  // Embedded structs put their keys in the message's own map.
  CHECK(schema::key_count<Run>() == 10);
  CHECK(schema::key_count<Finished>() == 1 + schema::key_count<RunResult>());
}

TEST_CASE("decode rejects malformed messages with a reason") {
  CHECK(error_of("").find("malformed") != std::string::npos);
  CHECK(error_of(pack_map("type", "launch_missiles")).find("unknown message type") != std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "version", 1)).find("missing key 'kernel'") != std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "version", 1, "kernel", "k", "prestarted", "", "extra", 1))
            .find("unknown key 'extra'") != std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "version", "1", "kernel", "k", "prestarted", "")).find("'version' is not") !=
        std::string::npos);
  CHECK(error_of(pack_map("type", "hello", "type", "hello", "version", 1, "kernel", "k")).find("duplicate key") !=
        std::string::npos);
  CHECK(error_of(pack_map("type", "cancel", "id", -1)).find("'id' is not an unsigned integer") != std::string::npos);
  CHECK(error_of(pack_map("type", "status_request", "id", 1, "id", 2)).find("duplicate key") != std::string::npos);
  CHECK(error_of(pack_map("type", "output", "id", 1, "stream", "stdin", "data", "x")).find("unknown stream") !=
        std::string::npos);
  CHECK(error_of(pack_map("type", "exec_done", "id", 1, "exit_code", -5000000000LL, "signal", 0, "timed_out", false,
                          "startup_ms", 0, "duration_ms", 1, "stdout_truncated", false, "stderr_truncated", false,
                          "state_lost", false))
            .find("out of range") != std::string::npos);
  // A u32 field given a value past 32 bits.
  CHECK(error_of(pack_map("type", "hello", "version", 1ULL << 40, "kernel", "k", "prestarted", ""))
            .find("out of range") != std::string::npos);
  // Not a map at all, and a map with a non-string key.
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::vector<int>{1, 2, 3});
  CHECK(error_of({buf.data(), buf.size()}).find("not a map") != std::string::npos);
  CHECK(error_of(pack_map(1, 2)).find("non-string key") != std::string::npos);
}

TEST_CASE("decode enforces size limits and trailing bytes") {
  Exec big;
  big.code.assign(limits::kMaxCodeBytes + 1, 'x');
  CHECK(error_of(encode(big)).find("'code' longer than") != std::string::npos);

  Exec many;
  for (size_t i = 0; i <= limits::kMaxEnvVars; ++i) many.env.emplace_back("V" + std::to_string(i), "x");
  CHECK(error_of(encode(many)).find("env vars") != std::string::npos);

  Finished loud;
  loud.result.stdout_data.assign(limits::kMaxStdoutBytes + 1, 'o');
  CHECK(error_of(encode(loud)).find("'stdout' longer than") != std::string::npos);

  auto ok_payload = encode(Hello{1, "k", ""});
  CHECK(error_of(ok_payload + "x").find("trailing") != std::string::npos);
  // Truncated input is an error, not a crash or a hang.
  for (size_t n = 0; n < ok_payload.size(); ++n) CHECK_FALSE(decode(ok_payload.substr(0, n)).ok());
}

TEST_CASE("deep nesting, many objects and huge declared counts are refused before allocation") {
  // 100 nested single-element arrays.
  std::string deep(100, '\x91');
  deep.push_back('\x01');
  CHECK_FALSE(decode(deep).ok());
  // A map header that claims 2^32-1 entries with no bytes behind it.
  CHECK_FALSE(decode(std::string("\xdf\xff\xff\xff\xff", 5)).ok());
  // A bin header claiming 4 GiB.
  CHECK_FALSE(decode(std::string("\xc6\xff\xff\xff\xff", 5)).ok());
  // The amplification case: a valid message with a ~1 MiB unknown key of
  // nested small arrays. Refused by the object count, whatever it holds.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  p.pack_map(3);
  p.pack(std::string("type")), p.pack(std::string("status_request"));
  p.pack(std::string("id")), p.pack(1);
  p.pack(std::string("junk"));
  p.pack_array(1000);
  for (int i = 0; i < 1000; ++i) {
    p.pack_array(1000);
    for (int k = 0; k < 1000; ++k) p.pack_nil();
  }
  auto r = decode({buf.data(), buf.size()});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("malformed") != std::string::npos);
}

TEST_CASE("random bytes never crash the decoder") {
  std::mt19937 rng(12345);
  auto valid = encode(Run{1, {Language::python, "print(1)", {{"A", "b"}}, std::chrono::milliseconds(1000), 256}});
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
