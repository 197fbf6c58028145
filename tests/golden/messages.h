// The fixed set of control-socket messages whose encodings are checked in
// as golden frames under python/tests/golden/ (written once by
// proto_golden). The C++ unit test (tests/unit/golden_test.cc) and the
// Python suite (python/tests/test_protocol.py) both hold their decoders to
// these files, so the two codecs cannot drift apart. Changing a message
// here, or a table in common/protocol.h, means regenerating the files and
// updating the Python expectations in the same change.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/protocol.h"

namespace sandbox::golden {

struct Golden {
  std::string name;  // file name without ".bin"
  proto::Message message;
};

// A zstd frame of "golden chunk\n" three times, its content size in its
// header (a literal, so a libzstd upgrade cannot change the golden bytes).
inline std::string chunk_frame() {
  static const unsigned char kBytes[] = {0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x27, 0x9d, 0x00, 0x00, 0x68,
                                         0x67, 0x6f, 0x6c, 0x64, 0x65, 0x6e, 0x20, 0x63, 0x68, 0x75,
                                         0x6e, 0x6b, 0x0a, 0x01, 0x00, 0x60, 0xcf, 0x2f};
  return std::string(reinterpret_cast<const char*>(kBytes), sizeof kBytes);
}

inline std::vector<Golden> messages() {
  using namespace std::chrono_literals;
  using namespace std::string_literals;
  std::vector<Golden> out;

  out.push_back({"01-run", proto::Run{1, RunRequest{Language::python, "print('h\xc3\xa9llo')\n",
                                                    {{"A", "1"}, {"GREETING", "hi there"}}, 1500ms, 512,
                                                    NetworkRequest{true, {"example.org", "*.example.com:8443"},
                                                                   {{8080, 0, false}, {3000, 18080, false}, {9000, 0, true}}},
                                                    {"numpy==1.26.4", "requests[socks]==2.31.0"}}}});
  out.push_back({"02-run-defaults", proto::Run{2, RunRequest{Language::raw, "echo hi", {}, 0ms, 0}}});
  out.push_back({"03-output-stdout", proto::Output{1, Stream::out, "line\n\x00\xff"s}});
  out.push_back({"04-output-stderr", proto::Output{7, Stream::err, "warning: x\n"}});

  RunResult r;
  r.language = Language::javascript;
  r.stdout_data = "out\n\xfe\x00"s;
  r.stderr_data = "err\n";
  r.stdout_truncated = true;
  r.stderr_truncated = false;
  r.exit_code = -3;
  r.signal = 9;
  r.timed_out = true;
  r.execution_time_ms = 1234;
  r.cpu_time_ms = 70000;
  r.memory_peak_mb = 300;
  r.timing = Timing{1, 200, 3000, 65536, 1ull << 40};
  r.warm_pool_hit = true;
  r.accelerator = "tcg";
  r.vm_start = "boot (snapshot failed)";
  r.state_lost = true;
  r.exposed_ports = {ExposedPort{8080, 41234, "127.0.0.1", "http://127.0.0.1:41234"}};
  r.network = NetworkStats{3, 5000000, 420, {NetworkDenial{"evil.example", 0, "DNS name not allowed"},
                                             NetworkDenial{"93.184.216.34", 443, "address not resolved for an allowed name"}}};
  r.layer = LayerUse{"py-0123456789abcdef0123456789abcdef01234567", "built", 41234};
  out.push_back({"05-result", proto::Finished{1, r}});
  out.push_back({"06-result-zero", proto::Finished{3, RunResult{}}});
  out.push_back({"07-error", proto::ErrorReply{1, ErrorCode::capacity, "uid 1000 already has 3 runs in flight \xe2\x80\x94 retry"}});
  out.push_back({"08-error-refused", proto::ErrorReply{0, ErrorCode::permission_denied, "uid 65534 is not allowed to use sandboxd"}});
  out.push_back({"09-status-request", proto::StatusRequest{1}});

  DaemonStatus st;
  st.version = "0.1.0";
  st.accelerator = "tcg";
  st.accelerator_reason = "kvm_pvm cannot run this guest";
  st.vms = 3;
  st.max_vms = 8;
  st.runs_active = 2;
  st.runs_queued = 1;
  st.sessions = 1;
  st.runs_per_uid = 6;
  st.pool = {PoolInfo{Language::python, 2, 1, 1, 10, 4}, PoolInfo{Language::javascript, 1, 1, 0, 0, 0},
             PoolInfo{Language::raw, 0, 0, 0, 0, 5000000000ull}};
  st.host_limits = "none: cgroup v2 memory controller missing";
  out.push_back({"10-status", proto::Status{1, st}});
  out.push_back({"11-snapshots-request", proto::SnapshotsRequest{1, true}});
  out.push_back({"12-snapshot-list", proto::SnapshotList{1, {SnapshotInfo{"python-256-0123abcd", Language::python, 256, 268435456},
                                                           SnapshotInfo{"raw-128-ffee", Language::raw, 128, 1}}}});
  out.push_back({"13-snapshot-list-empty", proto::SnapshotList{4, {}}});
  out.push_back({"14-session-create",
                 proto::SessionCreate{1, SessionOptions{Language::javascript, {{"NODE_ENV", "production"}}, 20000ms, 384, 600000ms,
                                                        NetworkRequest{false, {}, {{3000, 0}}}, {"left-pad@1.3.0"}}}});
  SessionInfo si{"s-0123456789abcdef01234567", Language::python, 256, 300000ms, 12, 1700000000000, 1700000005000, "snapshot",
                 {ExposedPort{3000, 40000, "127.0.0.1", "http://127.0.0.1:40000"}}, {"pypi.org", "*.pythonhosted.org"},
                 LayerUse{"js-89abcdef0123456789abcdef0123456789abcdef", "hit", 0}};
  out.push_back({"15-session-list", proto::SessionList{1, {si}}});
  out.push_back({"16-session-list-request", proto::SessionListRequest{1}});
  out.push_back({"17-session-exec", proto::SessionExec{1, "s-0123456789abcdef01234567", "x = 1\nprint(x)\n", 0}});
  out.push_back({"18-session-exec-timeout", proto::SessionExec{2, "s-0123456789abcdef01234567", "import time", 4294967295u}});
  out.push_back({"19-session-close", proto::SessionClose{1, "s-0123456789abcdef01234567"}});
  out.push_back({"20-ack", proto::Ack{1}});
  out.push_back({"21-file-write", proto::FileWrite{1, "s-0123456789abcdef01234567", "dir/\xc3\xbc.txt", 39, true}});
  out.push_back({"22-file-chunk", proto::FileChunk{1, chunk_frame()}});
  out.push_back({"23-file-read", proto::FileRead{1, "s-0123456789abcdef01234567", "out/report.txt"}});
  out.push_back({"24-file-done", proto::FileDone{1, 52428800}});
  out.push_back({"25-file-list-request", proto::FileListRequest{1, "s-0123456789abcdef01234567", ""}});
  out.push_back({"26-file-list", proto::FileList{1, FileListing{{FileEntry{"input", true, 0}, FileEntry{"a.txt", false, 5},
                                                                 FileEntry{"bad-\xff-name", false, 123456789012ull}},
                                                                true}}});
  out.push_back({"27-metrics-request", proto::MetricsRequest{1}});
  out.push_back({"28-metrics", proto::MetricsText{1, "# HELP sandboxd_runs_total Runs.\n# TYPE sandboxd_runs_total counter\n"
                                                     "sandboxd_runs_total{kind=\"run\",result=\"ok\"} 3\n"}});
  out.push_back({"29-session-network", proto::SessionNetwork{2, "s-0123456789abcdef01234567", true, {"pypi.org", "*.pythonhosted.org"}}});
  out.push_back({"30-layers-request", proto::LayersRequest{1, "py-0123456789abcdef0123456789abcdef01234567", false}});
  out.push_back({"31-layers-request-all", proto::LayersRequest{2, "", true}});
  LayerInfo ready{"py-0123456789abcdef0123456789abcdef01234567", Language::python, {"mypkg==1.0"},
                  {"mydep==0.1 sha256:ab12", "mypkg==1.0 sha256:cd34"}, 1048576, 1700000000000, 2, false};
  LayerInfo building{"js-89abcdef0123456789abcdef0123456789abcdef", Language::javascript, {"left-pad@1.3.0"}, {}, 0, 0, 1, true};
  out.push_back({"32-layer-list", proto::LayerList{1, {ready, building}}});
  return out;
}

}  // namespace sandbox::golden
