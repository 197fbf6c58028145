// Attacks on the control socket by a local user, each against a private
// daemon with small limits, and the bound that must hold: the daemon's
// memory (VmRSS) and descriptors stay under a ceiling, other clients are
// still served, and nothing is left once the attacker goes.
//
// Waits are bounded generously and outcomes asserted, never speeds: these
// machines differ 2-3x in speed and are shared. Figures are printed
// (MESSAGE) so that a run shows how far from each bound the daemon stayed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <random>

#include "common/files.h"
#include "common/framing.h"
#include "harness.h"
#include "probe.h"
#include "sandbox/client.h"

using namespace sandbox;
using namespace sandbox::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// The limits most cases run with: small enough that an attack reaches them
// in a moment.
constexpr uint32_t kMaxConnections = 64;
constexpr uint32_t kMaxConnectionsPerUid = 16;
constexpr auto kIdleTimeout = 2000ms;
constexpr auto kFrameTimeout = 1000ms;
// What the daemon holds for one uid's partial frames (ControlLimits).
constexpr uint64_t kReceiveBudgetPerUid = 32ull << 20;
// What it holds for one uid's uploads waiting for their session (ServiceOptions).
constexpr uint64_t kUploadBudgetPerUid = 160ull << 20;

std::vector<std::string> small_limits(uint32_t per_uid = kMaxConnectionsPerUid, std::chrono::milliseconds frame = kFrameTimeout,
                                uint32_t total = kMaxConnections) {
  return {"--max-connections",        std::to_string(total),
          "--max-connections-per-uid", std::to_string(per_uid),
          "--client-idle-timeout-ms", std::to_string(kIdleTimeout.count()),
          "--frame-timeout-ms",       std::to_string(frame.count())};
}

double mib(uint64_t kb) { return static_cast<double>(kb) / 1024.0; }
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// A private daemon and what it looked like before the attack.
struct Target {
  TestDaemon daemon;
  uint64_t base_rss_kb = 0;
  size_t base_fds = 0;

  explicit Target(const std::vector<std::string>& flags) {
    REQUIRE(daemon.start(flags));
    // One served request first: whatever the first call allocates is baseline.
    auto st = Client(daemon.socket()).status();
    REQUIRE_MESSAGE(st.ok(), st.error().describe());
    REQUIRE(eventually([&] { return fd_count(daemon.pid()) > 0; }, 5s));
    base_rss_kb = rss_kb(daemon.pid());
    base_fds = fd_count(daemon.pid());
  }

  // After the attacker is gone: every connection closed (descriptors back
  // to the baseline), no QEMU left, still serving, and a clean exit.
  void check_nothing_left() {
    CHECK_MESSAGE(eventually([&] { return fd_count(daemon.pid()) <= base_fds; }, 30s),
                  "descriptors: " << fd_count(daemon.pid()) << ", baseline " << base_fds);
    CHECK(daemon.wait_children_at_most(0, 30s));
    auto st = Client(daemon.socket()).status();
    CHECK_MESSAGE(st.ok(), (st.ok() ? "" : st.error().describe()));
    if (st.ok()) CHECK(st->vms == 0);
    int status = daemon.stop();
    CHECK_MESSAGE((WIFEXITED(status) && WEXITSTATUS(status) == 0), "wait status " << status << "\n" << daemon.log());
  }
};

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Everything `fd` yields until EOF or `deadline`; *eof says which.
std::string read_until_eof(int fd, Clock::time_point deadline, bool* eof) {
  std::string out;
  *eof = false;
  char buf[65536];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 1))) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      *eof = true;
      break;
    }
  }
  return out;
}

// The messages in a byte stream from the daemon.
std::vector<proto::Message> decode_all(const std::string& bytes) {
  MessageReader reader(limits::kMaxFrameBytes);
  reader.feed(bytes);
  std::vector<proto::Message> out;
  while (auto m = reader.next())
    if (*m) out.push_back(std::move(**m));
  return out;
}

const proto::ErrorReply* first_error(const std::vector<proto::Message>& ms) {
  for (auto& m : ms)
    if (auto* e = std::get_if<proto::ErrorReply>(&m)) return e;
  return nullptr;
}

}  // namespace

TEST_CASE("a client that pipelines requests and never reads is paused, then cut off") {
  Target t(small_limits());
  Probe probe(t.daemon);
  REQUIRE(probe.connected());

  auto fd = connect_unix(t.daemon.socket());
  REQUIRE(fd);
  set_nonblocking(fd.get());
  // Identical frames back to back: each is answered by a status reply
  // twenty-odd times its size.
  std::string one = frame_message(proto::StatusRequest{1});
  std::string batch;
  while (batch.size() < (256u << 10)) batch += one;
  uint64_t sent = 0;
  size_t offset = 0;
  bool cut_off = false;
  // Writes for 4 s at least, and on until the daemon gives up on it.
  auto start = Clock::now(), last_taken = start;
  while (Clock::now() < start + 30s) {
    ssize_t n = ::send(fd.get(), batch.data() + offset, batch.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      last_taken = Clock::now();
      sent += static_cast<uint64_t>(n);
      offset = (offset + static_cast<size_t>(n)) % batch.size();
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd.get(), POLLOUT, 0};
      ::poll(&p, 1, 100);
    } else {
      cut_off = true;
      if (Clock::now() > start + 4s) break;
      // Cut off early: the rest of the 4 s on a fresh connection, so that
      // the daemon is under attack for all of it.
      fd = connect_unix(t.daemon.socket());
      REQUIRE(fd);
      set_nonblocking(fd.get());
      offset = 0;
    }
  }
  double taken_ms = std::chrono::duration<double, std::milli>(last_taken - start).count();
  uint64_t peak_during = probe.peak_rss_kb();
  MESSAGE("never-reading client: sent " << sent << " bytes (" << sent / one.size() << " requests), the last at "
                                       << taken_ms << " ms; cut off " << ms_since(start) - taken_ms
                                       << " ms later; baseline RSS " << mib(t.base_rss_kb) << " MiB; "
                                       << probe.describe());
  CHECK(cut_off);
  // Backpressure: the daemon stopped reading once its replies piled up,
  // so the kernel buffers filled and the client could send little.
  CHECK(sent < (16u << 20));
  // Ceiling: replies queued (paused past 1 MiB, plus what one read's
  // requests produce) and one read buffer; 32 MiB leaves room for the
  // allocator.
  CHECK(peak_during < t.base_rss_kb + (32u << 10));
  CHECK(probe.answered() > 0);
  CHECK(probe.unanswered() == 0);
  CHECK(probe.max_latency_ms() < 30'000);

  // A client that does not read what it asked for is not served for ever:
  // with no reply taken for the idle timeout, it was cut off (the send
  // failed), and its connection is gone from the daemon.
  CHECK_MESSAGE(eventually([&] { return fd_count(t.daemon.pid()) <= t.base_fds + 1; }, 30s),
                "descriptors: " << fd_count(t.daemon.pid()) << ", baseline " << t.base_fds << " + the probe");
  bool eof = false;
  std::string rest = read_until_eof(fd.get(), Clock::now() + 30s, &eof);
  CHECK(eof);
  probe.stop();
  CHECK(probe.unanswered() == 0);
  fd.reset();
  t.check_nothing_left();
}

namespace {

// What one flooding uid saw.
struct FloodResult {
  uint32_t opened = 0;
  uint32_t connect_failed = 0;
  uint32_t refused_per_uid = 0;  // capacity: the per-user limit
  uint32_t refused_total = 0;    // capacity: the daemon's limit
  uint32_t idle_closed = 0;      // accepted, then closed with nothing said
  uint32_t other = 0;            // anything else (never expected)
  uint32_t still_open = 0;       // not closed within the deadline
  double min_idle_ms = 1e18, max_idle_ms = 0;
};

// Opens `n` connections as fast as the daemon takes them, holds them all
// without sending a byte, and sorts out how each one ended.
// `opened` is called once all are connected.
FloodResult flood(const std::string& socket, uint32_t n, const std::function<void()>& opened = {}) {
  FloodResult r;
  std::vector<unique_fd> fds;
  std::vector<Clock::time_point> opened_at;
  fds.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    auto fd = connect_unix(socket);
    if (!fd) {
      ++r.connect_failed;
      continue;
    }
    set_nonblocking(fd.get());
    fds.push_back(std::move(fd));
    opened_at.push_back(Clock::now());
  }
  r.opened = static_cast<uint32_t>(fds.size());
  if (opened) opened();
  std::vector<std::string> got(fds.size());
  std::vector<bool> done(fds.size(), false);
  size_t left = fds.size();
  auto deadline = Clock::now() + 60s;
  std::vector<pollfd> p;
  std::vector<size_t> idx;
  while (left > 0 && Clock::now() < deadline) {
    p.clear();
    idx.clear();
    for (size_t i = 0; i < fds.size(); ++i)
      if (!done[i]) p.push_back({fds[i].get(), POLLIN, 0}), idx.push_back(i);
    if (::poll(p.data(), p.size(), 200) <= 0) continue;
    for (size_t k = 0; k < p.size(); ++k) {
      if (!p[k].revents) continue;
      size_t i = idx[k];
      char buf[4096];
      ssize_t m;
      while ((m = ::recv(fds[i].get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) got[i].append(buf, static_cast<size_t>(m));
      if (m == 0 || (m < 0 && errno != EAGAIN)) {
        done[i] = true;
        --left;
        auto ms = decode_all(got[i]);
        if (ms.empty()) {
          ++r.idle_closed;
          double t = ms_since(opened_at[i]);
          r.min_idle_ms = std::min(r.min_idle_ms, t);
          r.max_idle_ms = std::max(r.max_idle_ms, t);
        } else if (auto* e = first_error(ms); e && e->code == ErrorCode::capacity && ms.size() == 1) {
          if (e->message.find("per-user limit") != std::string::npos) ++r.refused_per_uid;
          else if (e->message.find("(its limit)") != std::string::npos) ++r.refused_total;
          else ++r.other;
        } else {
          ++r.other;
        }
        fds[i].reset();
      }
    }
  }
  r.still_open = static_cast<uint32_t>(left);
  return r;
}

std::string describe(const FloodResult& r) {
  char b[320];
  std::snprintf(b, sizeof b,
                "opened %u (connect failed %u): refused per-uid %u, refused total %u, closed idle %u "
                "(after %.0f-%.0f ms), other %u, still open %u",
                r.opened, r.connect_failed, r.refused_per_uid, r.refused_total, r.idle_closed,
                r.idle_closed ? r.min_idle_ms : 0.0, r.max_idle_ms, r.other, r.still_open);
  return b;
}

}  // namespace

TEST_CASE("thousands of idle connections: refused past the caps, closed, bounded descriptors and log") {
  // Five uids flood at once: root and four others, each opening far more
  // than the per-uid cap (16), together far more than the total (40).
  constexpr uint32_t kTotal = 40;
  const std::vector<uid_t> others = {65531, 65532, 65533, 65534};
  auto flags = small_limits(kMaxConnectionsPerUid, kFrameTimeout, kTotal);
  flags.insert(flags.end(), {"--allowed-uids", "65531,65532,65533,65534"});
  Target t(flags);
  // Other uids must reach the socket.
  REQUIRE(::chmod(t.daemon.dir().c_str(), 0711) == 0);
  REQUIRE(::chmod(t.daemon.socket().c_str(), 0666) == 0);
  size_t warnings_before = count_lines(t.daemon.log(), "warning");

  // The other uids' flooders are forked before any thread exists here,
  // and wait for a go.
  int go[2];
  REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
  struct Child {
    pid_t pid;
    int result_fd;
  };
  std::vector<Child> children;
  for (uid_t uid : others) {
    int res[2];
    REQUIRE(::pipe2(res, O_CLOEXEC) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      ::close(res[0]);
      if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(3);
      char c;
      (void)!::read(go[0], &c, 1);
      FloodResult r = flood(t.daemon.socket(), 300);
      (void)!::write(res[1], &r, sizeof r);
      ::_exit(0);
    }
    ::close(res[1]);
    children.push_back({pid, res[0]});
  }
  ::close(go[0]);

  Probe probe(t.daemon);  // root's first connection, held throughout
  REQUIRE(probe.connected());
  // Root first fills its own share, alone, so that the per-uid cap is
  // reached whatever the order the floods then arrive in; the total is
  // first come, first served, and may leave some uid with no slot at all.
  auto start = Clock::now();
  std::promise<void> head_start;
  FloodResult first;
  std::thread root_first([&] { first = flood(t.daemon.socket(), kMaxConnectionsPerUid + 8, [&] { head_start.set_value(); }); });
  head_start.get_future().wait();
  ::close(go[1]);
  FloodResult mine = flood(t.daemon.socket(), 2000);
  root_first.join();
  double flood_ms = ms_since(start);
  MESSAGE("uid 0, alone first: " << describe(first));
  CHECK(first.refused_per_uid > 0);
  CHECK(first.idle_closed > 0);
  CHECK(first.idle_closed <= kMaxConnectionsPerUid - 1);  // the probe holds one

  std::vector<FloodResult> all = {first, mine};
  for (auto& c : children) {
    FloodResult r;
    CHECK(::read(c.result_fd, &r, sizeof r) == static_cast<ssize_t>(sizeof r));
    ::close(c.result_fd);
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    all.push_back(r);
  }
  probe.stop();
  std::string log = t.daemon.log();
  size_t warnings = count_lines(log, "warning") - warnings_before;
  size_t refusal_lines = count_lines(log, "refused a connection");
  MESSAGE("flood over " << flood_ms << " ms; baseline fds " << t.base_fds << ", RSS " << mib(t.base_rss_kb)
                        << " MiB; " << probe.describe() << "; warning lines " << warnings << " (" << refusal_lines
                        << " about refusals)");
  uint32_t refused_total = 0, opened = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    auto& r = all[i];
    if (i > 0) MESSAGE("uid " << (i == 1 ? 0 : others[i - 2]) << ": " << describe(r));
    opened += r.opened;
    refused_total += r.refused_total;
    // Every connection ended, and only in the two ways a flood may end.
    CHECK(r.still_open == 0);
    CHECK(r.other == 0);
    CHECK(r.opened == r.refused_per_uid + r.refused_total + r.idle_closed);
    // Each uid went past a cap; the connections it was given were closed
    // once idle, and not before.
    CHECK(r.refused_per_uid + r.refused_total > 0);
    if (r.idle_closed) CHECK(r.min_idle_ms >= static_cast<double>(kIdleTimeout.count()) - 50);
  }
  CHECK(opened >= 3000);
  // Together the uids went past the daemon's total.
  CHECK(refused_total > 0);
  // Descriptors: the connections it serves, what it had before, and the
  // listening socket's accept batch of refusals being closed.
  CHECK(probe.peak_fds() <= t.base_fds + kTotal + 8);
  CHECK(probe.answered() > 0);
  CHECK(probe.unanswered() == 0);
  CHECK(probe.max_latency_ms() < 30'000);
  // Refusals are logged at a bounded rate, not once per connection.
  CHECK(warnings <= 25);
  t.check_nothing_left();
}

TEST_CASE("half-sent frames on many connections: memory bounded, closed at the frame deadline") {
  // More connections than the receive budget holds frames for (15 of
  // 2 MiB fit in 32 MiB per uid), and a frame deadline that leaves time to
  // fill them.
  constexpr int kAttackers = 28;
  constexpr auto kDeadline = 2000ms;
  Target t(small_limits(kAttackers + 4, kDeadline));
  Probe probe(t.daemon);
  REQUIRE(probe.connected());

  std::string frame_but_one(kFrameHeaderBytes + limits::kMaxFrameBytes - 1, 'x');
  uint32_t n = limits::kMaxFrameBytes;
  frame_but_one[0] = static_cast<char>(n >> 24), frame_but_one[1] = static_cast<char>(n >> 16);
  frame_but_one[2] = static_cast<char>(n >> 8), frame_but_one[3] = static_cast<char>(n);

  std::vector<unique_fd> fds;
  std::vector<Clock::time_point> first_byte;
  uint32_t cut_mid_send = 0;
  for (int i = 0; i < kAttackers; ++i) {
    auto fd = connect_unix(t.daemon.socket());
    REQUIRE(fd);
    first_byte.push_back(Clock::now());
    std::string_view rest = frame_but_one;
    while (!rest.empty()) {
      ssize_t m = ::send(fd.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
      if (m <= 0) {
        ++cut_mid_send;  // refused while sending: the budget was spent
        break;
      }
      rest.remove_prefix(static_cast<size_t>(m));
    }
    fds.push_back(std::move(fd));
  }
  uint32_t timed_out = 0, refused = 0, other = 0, open = 0;
  double min_close_ms = 1e18, max_close_ms = 0;
  for (size_t i = 0; i < fds.size(); ++i) {
    bool eof = false;
    auto ms = decode_all(read_until_eof(fds[i].get(), Clock::now() + 30s, &eof));
    double closed_after = ms_since(first_byte[i]);
    auto* e = first_error(ms);
    if (!eof) ++open;
    else if (e && e->code == ErrorCode::timeout && e->message.find("not completed within") != std::string::npos) {
      ++timed_out;
      min_close_ms = std::min(min_close_ms, closed_after);
      max_close_ms = std::max(max_close_ms, closed_after);
    } else if (e && e->code == ErrorCode::capacity && e->message.find("partial request frames") != std::string::npos)
      ++refused;
    else ++other;
  }
  probe.stop();
  MESSAGE(kAttackers << " half-sent 2 MiB frames: closed at the deadline " << timed_out << " (" << min_close_ms << "-"
                     << max_close_ms << " ms after their first byte), refused for the receive budget " << refused
                     << " (" << cut_mid_send << " while still sending), other " << other << ", left open " << open
                     << "; baseline RSS " << mib(t.base_rss_kb) << " MiB; " << probe.describe());
  CHECK(open == 0);
  CHECK(other == 0);
  CHECK(timed_out > 0);
  CHECK(refused > 0);
  CHECK(timed_out + refused == static_cast<uint32_t>(kAttackers));
  if (timed_out) CHECK(min_close_ms >= static_cast<double>(kDeadline.count()) - 50);
  // Ceiling: the uid's receive budget, twice over for the buffers' growth
  // by doubling, plus 16 MiB for read buffers and the allocator.
  CHECK(probe.peak_rss_kb() < t.base_rss_kb + 2 * (kReceiveBudgetPerUid >> 10) + (16u << 10));
  CHECK(probe.unanswered() == 0);
  CHECK(probe.max_latency_ms() < 30'000);
  fds.clear();
  t.check_nothing_left();
}

TEST_CASE("large frames once received leave nothing held by connections that then idle") {
  // A frame near the limit that earns an error and leaves the connection
  // open: the largest run (1 MiB of code, 100 variables of 4 KiB) with a
  // memory size out of bounds.
  constexpr int kClients = kMaxConnectionsPerUid - 1;  // the probe is the uid's last
  Target t(small_limits());
  Probe probe(t.daemon);
  REQUIRE(probe.connected());
  proto::Run big{1, make_request(Language::python, std::string(limits::kMaxCodeBytes, '#'))};
  for (size_t i = 0; i < limits::kMaxEnvVars; ++i)
    big.request.env.push_back({"V" + std::to_string(i), std::string(limits::kMaxEnvValueBytes, 'v')});
  big.request.memory_mb = 64;
  std::string f = frame_message(big);
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    auto c = std::make_unique<RawClient>(t.daemon.socket());
    REQUIRE(c->connected());
    REQUIRE(c->send_bytes(f));
    auto m = c->receive(30s);
    REQUIRE(m.has_value());
    auto* e = std::get_if<proto::ErrorReply>(&*m);
    REQUIRE(e);
    CHECK(e->code == ErrorCode::invalid_argument);
    clients.push_back(std::move(c));
  }
  // All of them idle now, within the idle timeout.
  uint64_t held = rss_kb(t.daemon.pid());
  MESSAGE(kClients << " idle connections after a " << f.size() << "-byte frame each: RSS " << mib(held)
                   << " MiB (baseline " << mib(t.base_rss_kb) << " MiB); " << probe.describe());
  // What an idle connection keeps is small: not the frame it once held.
  CHECK(held < t.base_rss_kb + (16u << 10));
  probe.stop();
  clients.clear();
  t.check_nothing_left();
}

namespace {

// A status request whose map also holds, under a key no message has, a
// value of about 1.9 million tiny nested arrays: within every bound per
// container, but decoding it naively would allocate an object for each.
std::string amplification_frame() {
  std::string p;
  p += '\x83';  // map of 3
  p += '\xa4';
  p += "type";
  p += '\xae';
  p += "status_request";
  p += '\xa2';
  p += "id";
  p += '\x01';
  p += '\xa2';
  p += "zz";
  constexpr unsigned kOuter = 1024, kInner = 920;
  p += '\xdc', p += static_cast<char>(kOuter >> 8), p += static_cast<char>(kOuter & 0xff);  // array 16
  for (unsigned i = 0; i < kOuter; ++i) {
    p += '\xdc', p += static_cast<char>(kInner >> 8), p += static_cast<char>(kInner & 0xff);
    for (unsigned j = 0; j < kInner; ++j) p += "\x91\xc0";  // [nil]
  }
  return frame(p);
}

}  // namespace

TEST_CASE("the decoding amplification frame is refused quickly and costs no memory") {
  Target t(small_limits());
  Probe probe(t.daemon);
  REQUIRE(probe.connected());
  std::string f = amplification_frame();
  REQUIRE(f.size() - kFrameHeaderBytes <= limits::kMaxFrameBytes);
  double max_refuse_ms = 0;
  std::string message;
  // Sent again and again for 2 s at least, so that the status probe runs
  // alongside.
  int times = 0;
  for (auto start = Clock::now(); times < 8 || (Clock::now() < start + 2s && times < 2000); ++times) {
    RawClient c(t.daemon.socket());
    REQUIRE(c.connected());
    REQUIRE(c.send_bytes(f));
    auto sent = Clock::now();
    auto m = c.receive(30s);
    max_refuse_ms = std::max(max_refuse_ms, ms_since(sent));
    REQUIRE(m.has_value());
    auto* e = std::get_if<proto::ErrorReply>(&*m);
    REQUIRE(e);
    CHECK(e->code == ErrorCode::invalid_argument);
    message = e->message;
    bool closed = false;
    CHECK_FALSE(c.receive(30s, &closed).has_value());
    CHECK(closed);
  }
  probe.stop();
  MESSAGE(times << " frames of " << f.size() << " bytes refused (\"" << message << "\"), slowest "
                 << max_refuse_ms << " ms after its last byte; baseline RSS " << mib(t.base_rss_kb) << " MiB; "
                 << probe.describe());
  // A frame buffered and copied once: no per-object allocation.
  CHECK(probe.peak_rss_kb() < t.base_rss_kb + (16u << 10));
  CHECK(probe.answered() > 0);
  CHECK(probe.unanswered() == 0);
  CHECK(probe.max_latency_ms() < 30'000);
  t.check_nothing_left();
}

TEST_CASE("uploads queued behind a busy session are bounded per uid and freed when the client goes") {
  Target t({});
  Client client(t.daemon.socket());
  SessionOptions so;
  so.language = Language::python;
  so.timeout = 280s;
  auto session = client.create_session(so);
  REQUIRE_MESSAGE(session.ok(), session.error().describe());
  uint64_t base = rss_kb(t.daemon.pid());

  // The session is kept busy by a long exec from another connection.
  RawClient busy(t.daemon.socket());
  REQUIRE(busy.send(proto::SessionExec{1, session->id(), "import time\nprint('busy', flush=True)\ntime.sleep(270)",
                                       280'000}));
  auto out = busy.receive(60s);
  REQUIRE(out.has_value());
  REQUIRE(std::holds_alternative<proto::Output>(*out));

  // 50 MB of random data: zstd cannot shrink it.
  std::string data(limits::kMaxFileBytes, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(data.data() + i, &v, 8);
  }
  auto chunks = compress_chunks(data);
  data.clear();
  data.shrink_to_fit();

  Probe probe(t.daemon);
  REQUIRE(probe.connected());
  auto uploader = std::make_unique<RawClient>(t.daemon.socket());
  constexpr uint64_t kUploads = 5;
  for (uint64_t id = 1; id <= kUploads; ++id) {
    REQUIRE(uploader->send(proto::FileWrite{id, session->id(), "up" + std::to_string(id) + ".bin", limits::kMaxFileBytes}));
    for (auto& c : chunks) REQUIRE(uploader->send(proto::FileChunk{id, c}));
  }
  std::map<uint64_t, proto::ErrorReply> errors;
  while (auto m = uploader->receive(5s))
    if (auto* e = std::get_if<proto::ErrorReply>(&*m)) errors[e->id] = *e;
  uint64_t held = rss_kb(t.daemon.pid());
  MESSAGE(kUploads << " uploads of 50 MiB: daemon RSS " << mib(base) << " MiB before, " << mib(held)
                   << " MiB while they wait; " << probe.describe());
  // The first three fit in the uid's budget and wait for the session
  // (answered only once it takes them); the rest are refused.
  for (uint64_t id = 1; id <= 3; ++id) {
    auto it = errors.find(id);
    CHECK_MESSAGE(it == errors.end(), "upload " << id << ": " << (it == errors.end() ? "" : it->second.message));
  }
  for (uint64_t id = 4; id <= kUploads; ++id) {
    REQUIRE(errors.count(id));
    CHECK(errors[id].code == ErrorCode::capacity);
    CHECK(errors[id].message.find("uploads waiting for their session") != std::string::npos);
  }
  // Ceiling: the budget, plus 32 MiB for frame buffers and the allocator.
  CHECK(probe.peak_rss_kb() < base + (kUploadBudgetPerUid >> 10) + (32u << 10));

  // The uploader goes: its waiting writes are dropped and their memory
  // given back. Slack: 24 MiB for the allocator's caches.
  auto gone = Clock::now();
  uploader.reset();
  bool returned = eventually([&] { return rss_kb(t.daemon.pid()) < base + (24u << 10); }, 30s);
  MESSAGE("after the uploader left: RSS " << mib(rss_kb(t.daemon.pid())) << " MiB, " << ms_since(gone) << " ms later");
  CHECK(returned);
  probe.stop();
  CHECK(probe.unanswered() == 0);
  CHECK(probe.max_latency_ms() < 30'000);

  // The exec's caller goes too: the exec is stopped, the session lives on
  // and holds none of the dropped files.
  busy.close();
  auto files = session->list_files();
  REQUIRE_MESSAGE(files.ok(), files.error().describe());
  for (auto& e : files->entries) CHECK_MESSAGE(!e.name.starts_with("up"), e.name);
  auto closed = session->close();
  CHECK_MESSAGE(closed.ok(), (closed.ok() ? "" : closed.error().describe()));
  t.check_nothing_left();
}

TEST_CASE("a request id in use is refused, and the run under it still dies with its client") {
  Target t({});
  RawClient c(t.daemon.socket());
  REQUIRE(c.connected());
  REQUIRE(c.send(proto::Run{7, make_request(Language::python, "import time\nprint('up', flush=True)\ntime.sleep(270)",
                                            280'000)}));
  SessionOptions so;
  so.language = Language::python;
  REQUIRE(c.send(proto::SessionCreate{7, so}));
  auto m = c.receive(30s);
  REQUIRE(m.has_value());
  auto* e = std::get_if<proto::ErrorReply>(&*m);
  REQUIRE(e);
  CHECK(e->id == 7);
  CHECK(e->code == ErrorCode::invalid_argument);
  CHECK(e->message.find("already in use") != std::string::npos);
  // The run goes on: its output arrives, from the one VM there is.
  m = c.receive(120s);
  REQUIRE(m.has_value());
  auto* o = std::get_if<proto::Output>(&*m);
  REQUIRE(o);
  CHECK(o->id == 7);
  CHECK(t.daemon.children().size() == 1);
  auto st = Client(t.daemon.socket()).status();
  REQUIRE(st.ok());
  CHECK(st->sessions == 0);
  CHECK(st->runs_active == 1);
  // The client goes: its run is cancelled and the VM destroyed.
  auto gone = Clock::now();
  c.close();
  CHECK(t.daemon.wait_children_at_most(0, 30s));
  MESSAGE("the run's QEMU was gone " << ms_since(gone) << " ms after its client");
  t.check_nothing_left();
}
