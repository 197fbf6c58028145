// Writes the seed corpus of the fuzz targets from real protocol messages
// and real QMP lines:
//   build-fuzz/bin/fuzz_make_seeds fuzz/corpus
// It replaces what is in corpus/<target>/ for each of its targets. The
// corpus is checked in; run this again when the protocol changes.
#include <msgpack.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/files.h"
#include "common/framing.h"
#include "common/json_parse.h"
#include "common/protocol.h"

namespace fs = std::filesystem;
using namespace sandbox::proto;
using sandbox::Language;
using sandbox::Stream;
using std::chrono::milliseconds;

namespace {

using Named = std::pair<std::string, Message>;

constexpr std::string_view kSession = "s-0123456789abcdef";

// One message of every type, with every field set to something a real
// conversation would carry.
std::vector<Named> messages() {
  sandbox::RunResult result;
  result.language = Language::python;
  result.stdout_data = "hello\n";
  result.stderr_data = "Traceback (most recent call last):\n  ...\nValueError\n";
  result.stdout_truncated = false;
  result.stderr_truncated = true;
  result.exit_code = 1;
  result.signal = 0;
  result.timed_out = false;
  result.execution_time_ms = 12;
  result.cpu_time_ms = 9;
  result.memory_peak_mb = 74;
  result.timing = {3, 150, 40, 12, 210};
  result.warm_pool_hit = true;
  result.accelerator = "kvm";
  result.vm_start = "pool";
  result.state_lost = true;

  sandbox::DaemonStatus status;
  status.version = "0.2.0";
  status.accelerator = "tcg";
  status.accelerator_reason = "/dev/kvm: No such file or directory";
  status.vms = 3;
  status.max_vms = 16;
  status.runs_active = 1;
  status.runs_queued = 2;
  status.sessions = 1;
  status.runs_per_uid = 4;
  status.pool = {{Language::python, 2, 1, 1, 10, 2}, {Language::javascript, 1, 1, 0, 3, 1}, {Language::raw, 0, 0, 0, 0, 5}};
  status.host_limits = "sandboxd.slice: memory pids cpu";

  Exec exec;
  exec.id = 9;
  exec.language = Language::raw;
  exec.code = "echo $((6*7))";
  exec.env = {{"LANG", "C.UTF-8"}, {"HOME", "/home/sandbox"}};
  exec.timeout_ms = 30000;
  exec.startup_timeout_ms = 10000;
  exec.grace_ms = 2000;
  exec.stdout_limit = 1 << 20;
  exec.stderr_limit = 100 << 10;
  exec.pids_max = 64;
  exec.session = true;

  sandbox::SessionInfo session{std::string(kSession), Language::python, 256, milliseconds{60000}, 2,
                               1700000000000, 1700000005000, "snapshot"};
  std::string chunk = sandbox::compress_chunk("name,value\nalpha,1\nbeta,2\n");

  sandbox::ImagesInfo images;
  images.directory = "/var/lib/sandboxd/images";
  images.images = {{"kernel", "vmlinux", std::string(64, 'a')},
                   {"initrd", "initramfs.cpio", std::string(64, 'b')},
                   {"rootfs", "rootfs.erofs", std::string(64, 'c')}};
  images.kernel_release = "6.1.0-37-amd64";
  images.description = "sandboxd guest images: sha256 role file [kernel release]";
  images.tools = {{"python3", "python3.11", "3.11.2-6+deb12u6"}, {"nodejs", "nodejs", "18.20.4+dfsg-1~deb12u1"}};
  images.packages = {{"bash", "5.2.15-2+b7"}, {"nodejs", "18.20.4+dfsg-1~deb12u1"}, {"python3.11", "3.11.2-6+deb12u6"}};
  images.packages_sha256 = std::string(64, 'd');
  std::string s(kSession);

  return {
      {"run", Run{1, {Language::python, "print('hi')\n", {{"A", "1"}, {"B", ""}}, milliseconds{5000}, 256}}},
      {"output", Output{1, Stream::err, "Traceback ...\n"}},
      {"result", Finished{1, result}},
      {"error", ErrorReply{1, sandbox::ErrorCode::timeout, "the code ran past its 5000 ms timeout"}},
      {"hello", Hello{kProtocolVersion, "6.1.0-18-amd64", "python"}},
      {"exec", exec},
      {"exec_done", ExecDone{9, 0, 0, false, 35, 41, false, true, false}},
      {"ping", Ping{17}},
      {"pong", Pong{17}},
      {"status_request", StatusRequest{2}},
      {"status", Status{2, status}},
      {"resume", Resume{std::string(32, '\x5a'), 1700000000000000000ull, "sbx-1", true}},
      {"snapshots_request", SnapshotsRequest{3, true}},
      {"snapshot_list", SnapshotList{3, {{"python-256-abc", Language::python, 256, 1 << 28}}}},
      {"session_create", SessionCreate{4, {Language::javascript, {{"X", "y"}}, milliseconds{1000}, 256,
                                           milliseconds{60000}}}},
      {"session_list", SessionList{4, {session, session}}},
      {"session_list_request", SessionListRequest{5}},
      {"session_exec", SessionExec{6, s, "x = 1\n", 0}},
      {"session_close", SessionClose{7, s}},
      {"ack", Ack{7}},
      {"file_write", FileWrite{8, s, "data/in.csv", 25, true}},
      {"file_chunk", FileChunk{8, chunk}},
      {"file_read", FileRead{10, s, "out/result.json"}},
      {"file_done", FileDone{8, 25}},
      {"file_list_request", FileListRequest{11, s, ""}},
      {"file_list", FileList{11, {{{"in.csv", false, 25}, {"out", true, 0}}, true}}},
      {"cancel", Cancel{9}},
      {"images_request", ImagesRequest{12}},
      {"image_list", ImageList{12, images}},
      {"metrics_request", MetricsRequest{13}},
      {"metrics", MetricsText{13, "# TYPE a_total counter\na_total 1\n"}},
  };
}

// The messages whose shapes differ most, for the msgpack scanner (the
// decoder's seeds reach it too, through decode).
constexpr std::string_view kScanSeeds[] = {"run", "result", "status", "session_list", "file_list", "exec", "image_list"};

// One object of every msgpack format, for the scanner.
std::string every_format() {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  p.pack_array(24);
  p.pack_nil(), p.pack_true(), p.pack_false();
  p.pack_fix_uint8(200), p.pack_fix_uint16(60000), p.pack_fix_uint32(4000000000u), p.pack_fix_uint64(1ull << 60);
  p.pack_fix_int8(-100), p.pack_fix_int16(-30000), p.pack_fix_int32(-2000000000), p.pack_fix_int64(-(1ll << 60));
  p.pack(7), p.pack(-7), p.pack(1.5f), p.pack(2.5);
  p.pack(std::string("short")), p.pack(std::string(40, 's'));
  p.pack_bin(3), p.pack_bin_body("\0\1\2", 3);
  p.pack_ext(1, 5), p.pack_ext_body("e", 1);
  p.pack_ext(4, 5), p.pack_ext_body("ext4", 4);
  p.pack_ext(3, 5), p.pack_ext_body("ext", 3);
  p.pack_array(0);
  p.pack_map(1), p.pack(std::string("k")), p.pack_array(1), p.pack_map(0);
  p.pack_array(2), p.pack(1), p.pack_array(1), p.pack(2);
  return std::string(buf.data(), buf.size());
}

// A fuzz_frame input: the stream first, then the choices the target makes
// (FuzzedDataProvider reads integers from the end, most significant byte
// first): its oversize mode, its limit and the size of every piece.
class FrameSeed {
 public:
  FrameSeed(bool skip, size_t limit) {
    choose(skip ? 1 : 0, 0, 1);
    bool standard = limit == sandbox::limits::kMaxFrameBytes;
    choose(standard ? 1 : 0, 0, 1);
    if (!standard) choose(limit, 0, 4096);
  }
  // The stream, cut into pieces of `step` bytes.
  std::string bytes(std::string_view stream, size_t step) {
    for (size_t at = 0; at < stream.size(); at += step) choose(std::min(step, stream.size() - at), 1, 1 << 16);
    return std::string(stream) + std::string(choices_.rbegin(), choices_.rend());
  }

 private:
  void choose(uint64_t value, uint64_t min, uint64_t max) {
    uint64_t range = max - min;
    int n = 0;
    while (n < 8 && (range >> (8 * n)) > 0) ++n;
    for (int i = n - 1; i >= 0; --i) choices_.push_back(static_cast<char>((value - min) >> (8 * i)));
  }
  std::string choices_;
};

// A frame header alone, announcing `n` bytes.
std::string header(uint32_t n) {
  return {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n)};
}

// Real QMP lines (QEMU 7.2, as Debian 12 ships it) and JSON edge cases.
const std::pair<std::string_view, std::string_view> kJsonSeeds[] = {
    {"qmp_greeting",
     R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u7"}, "capabilities": ["oob"]}})"},
    {"qmp_return_empty", R"({"return": {}})"},
    {"qmp_query_status", R"({"return": {"status": "running", "singlestep": false, "running": true}})"},
    {"qmp_query_migrate",
     R"({"return": {"expected-downtime": 300, "status": "completed", "setup-time": 2, "downtime": 12, "total-time": 1234, "ram": {"total": 268435456, "postcopy-requests": 0, "dirty-sync-count": 2, "multifd-bytes": 0, "pages-per-second": 87654, "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 1234.567891, "transferred": 12345678, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 12345678, "duplicate": 60000, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 12001280, "normal": 2930}}})"},
    {"qmp_error",
     R"({"error": {"class": "GenericError", "desc": "Could not open '/run/sandboxd/vm-7/snapshot.tmp': Permission denied"}})"},
    {"qmp_event_stop", R"({"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "event": "STOP"})"},
    {"qmp_event_shutdown",
     R"({"timestamp": {"seconds": 1700000001, "microseconds": 9}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}})"},
    {"qmp_event_migration",
     R"({"timestamp": {"seconds": 1700000002, "microseconds": 500000}, "event": "MIGRATION", "data": {"status": "active"}})"},
    {"escapes", R"(["\"\\\/\b\f\n\r\t", "\u0041\u00e9\u20ac\u0000\u001F", "caf\u00E9 ü €"])"},
    {"surrogates", R"({"emoji": "\ud83d\ude00", "raw": "😀", "mixed": "a\uD834\uDD1Eb"})"},
    {"numbers",
     R"([0, -0, 7, -12, 1e10, 1E-5, -1.5e+300, 2.5E-0, 0.000001, 9223372036854775807, -9223372036854775808, 123456789012345678901234567890])"},
    {"literals", " \t\r\n[true, false, null, {\"a\": null}] \n"},
    {"empty_containers", R"({"a": [], "b": {}, "c": "", "d": [[], {}]})"},
    {"deep", R"({"a": [{"b": [{"c": [{"d": [{"e": [{"f": [{"g": [[1]]}]}]}]}]}]}]})"},
};

void write(const fs::path& dir, std::string_view name, std::string_view bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  fs::path out = argv[1];
  for (const char* target : {"fuzz_decode", "fuzz_msgpack_scan", "fuzz_frame", "fuzz_json_parse"})
    fs::remove_all(out / target);

  auto all = messages();
  if (all.size() != std::variant_size_v<Message>) {
    std::fprintf(stderr, "%zu seeds for %zu message types\n", all.size(), std::variant_size_v<Message>);
    return 1;
  }
  std::string every_frame;
  std::vector<bool> seen(std::variant_size_v<Message>);
  for (const auto& [name, message] : all) {
    seen[message.index()] = true;
    std::string payload = encode(message);
    // A seed the decoder refuses would only explore the refusals.
    if (auto decoded = decode(payload); !decoded.ok()) {
      std::fprintf(stderr, "seed '%s' does not decode: %s\n", name.c_str(), decoded.error().describe().c_str());
      return 1;
    }
    write(out / "fuzz_decode", name, payload);
    for (auto scan : kScanSeeds)
      if (name == scan) write(out / "fuzz_msgpack_scan", name, payload);
    every_frame += sandbox::frame(payload);
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) {
      std::fprintf(stderr, "no seed for message type %zu\n", i);
      return 1;
    }
  }
  write(out / "fuzz_msgpack_scan", "every_format", every_format());

  auto message = [&](std::string_view name) {
    for (const auto& [n, m] : all)
      if (n == name) return sandbox::frame_message(m);
    std::fprintf(stderr, "no message '%.*s'\n", static_cast<int>(name.size()), name.data());
    std::exit(1);
  };
  constexpr size_t kStandard = sandbox::limits::kMaxFrameBytes;
  // A client's request in one piece; every message in pieces of a page.
  write(out / "fuzz_frame", "client_run", FrameSeed(false, kStandard).bytes(message("run"), 1 << 16));
  write(out / "fuzz_frame", "every_message", FrameSeed(false, kStandard).bytes(every_frame, 4096));
  // The agent's side of an exec and of a file upload, a few bytes at a time,
  // the way a virtio-serial port delivers them, ending mid-frame.
  write(out / "fuzz_frame", "agent_exec",
        FrameSeed(true, kStandard)
            .bytes(message("hello") + message("exec") + message("output") + message("exec_done") + message("cancel") +
                       message("exec_done").substr(0, 9),
                   13));
  write(out / "fuzz_frame", "file_transfer",
        FrameSeed(true, kStandard)
            .bytes(message("file_write") + message("file_chunk") + message("file_chunk") + message("file_done"), 64));
  // Oversize frames under a small limit: one in the middle whose bytes
  // arrive, one at the end whose bytes never do.
  std::string ping = message("ping");
  std::string oversize = header(100) + std::string(100, '\xc1');
  write(out / "fuzz_frame", "oversize_skip",
        FrameSeed(true, 64).bytes(ping + oversize + message("pong") + header(4000) + "\x01\x02", 5));
  write(out / "fuzz_frame", "oversize_fail", FrameSeed(false, 64).bytes(ping + oversize + message("pong"), 7));
  write(out / "fuzz_frame", "empty_frames",
        FrameSeed(true, 0).bytes(sandbox::frame("") + sandbox::frame("") + sandbox::frame("\x80") + sandbox::frame(""), 3));

  for (const auto& [name, text] : kJsonSeeds) {
    if (auto parsed = sandbox::parse_json(text); !parsed.ok()) {
      std::fprintf(stderr, "JSON seed '%.*s' does not parse: %s\n", static_cast<int>(name.size()), name.data(),
                   parsed.error().describe().c_str());
      return 1;
    }
    write(out / "fuzz_json_parse", name, text);
  }
  return 0;
}
