// Writes the seed corpus of the fuzz targets from real protocol messages:
//   build-fuzz/bin/fuzz_make_seeds fuzz/corpus
// The corpus is checked in; run this again when the protocol changes.
#include <msgpack.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/framing.h"
#include "common/protocol.h"

namespace fs = std::filesystem;
using namespace sandbox::proto;

namespace {

using Named = std::pair<std::string, Message>;

std::vector<Named> messages() {
  RunResult result;
  result.id = 7;
  result.stdout_data = "hello\n";
  result.stderr_data = "warning\n";
  result.exit_code = 1;
  result.execution_time_ms = 12;
  result.timing = {3, 150, 12, 170};
  result.accelerator = "kvm";
  result.vm_start = "pool";

  Status status;
  status.id = 4;
  status.version = "0.1.0";
  status.accelerator = "kvm";
  status.vms = 3;
  status.max_vms = 16;
  status.pool = {{Language::python, 2, 1, 1, 10, 2}, {Language::javascript, 1, 1, 0, 3, 1}};
  status.host_limits = "sandboxd.slice: memory pids cpu";

  Exec exec;
  exec.id = 9;
  exec.language = Language::raw;
  exec.code = "echo $((6*7))";
  exec.env = {{"LANG", "C.UTF-8"}};
  exec.timeout_ms = 30000;
  exec.grace_ms = 2000;
  exec.stdout_limit = 1 << 20;
  exec.stderr_limit = 100 << 10;
  exec.pids_max = 64;

  return {
      {"run", RunRequest{1, Language::python, "print('hi')\n", {{"A", "1"}, {"B", ""}}, 5000, 256}},
      {"status_request", StatusRequest{2}},
      {"status", status},
      {"session_create", SessionCreate{3, Language::javascript, {{"X", "y"}}, 1000, 256, 60000}},
      {"session_exec", SessionExec{5, "s-0123456789abcdef", "x = 1\n", 0}},
      {"session_list", SessionList{6, {{"s-0123456789abcdef", Language::python, 256, 60000, 2, 1700000000000,
                                        1700000005000, "snapshot"}}}},
      {"file_write", FileWrite{8, "s-0123456789abcdef", "data/in.csv", 5, false,
                               {std::string("\x28\xb5\x2f\xfd\x20\x05\x29\x00\x00" "a,b\n1", 14)}}},
      {"file_list", FileList{10, {{"in.csv", false, 5}, {"out", true, 0}}, false}},
      {"snapshot_list", SnapshotList{11, {{"python-256-abc", Language::python, 256, 1 << 28}}}},
      {"output", Output{1, Stream::err, "Traceback ...\n"}},
      {"result", result},
      {"error", ErrorReply{1, sandbox::ErrorCode::timeout, "the code ran past its 5000 ms timeout"}},
      {"hello", Hello{kProtocolVersion, "6.1.0-18-amd64", "python"}},
      {"resume", Resume{std::string(32, '\x5a'), 1700000000000000000ull, "sbx-1", true}},
      {"exec", exec},
      {"exec_done", ExecDone{9, 0, 0, false, 41, false, false, false}},
  };
}

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

void write(const fs::path& dir, const std::string& name, const std::string& bytes) {
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
  std::string all_frames;
  for (const auto& [name, message] : messages()) {
    std::string payload = encode(message);
    // A seed the decoder refuses would only explore the refusals.
    if (auto decoded = decode(payload); !decoded.ok()) {
      std::fprintf(stderr, "seed '%s' does not decode: %s\n", name.c_str(), decoded.error().describe().c_str());
      return 1;
    }
    write(out / "fuzz_decode", name, payload);
    write(out / "fuzz_msgpack_scan", name, payload);
    all_frames += sandbox::frame(payload);
  }
  write(out / "fuzz_msgpack_scan", "every_format", every_format());

  // Streams: a client's request, an agent's conversation, and a stream that
  // ends in a header over every limit. The last bytes steer the piece sizes.
  write(out / "fuzz_frame", "run", sandbox::frame_message(messages()[0].second));
  write(out / "fuzz_frame", "agent", sandbox::frame_message(Hello{kProtocolVersion, "6.1.0-18-amd64", ""}) +
                                          sandbox::frame_message(Output{9, Stream::out, "42\n"}) +
                                          sandbox::frame_message(ExecDone{9, 0, 0, false, 41, false, false, false}) +
                                          std::string("\x10\x00\x03", 3));
  write(out / "fuzz_frame", "every_message", all_frames);
  write(out / "fuzz_frame", "oversize", sandbox::frame("") + std::string("\xff\xff\xff\xff", 4) + "\x01");
  write(out / "fuzz_frame", "empty_frames", sandbox::frame("") + sandbox::frame("") + sandbox::frame("\x80"));
  return 0;
}
