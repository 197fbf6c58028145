// sandboxctl drain: takes the daemon out of rotation before a rollout or a
// host's maintenance. New runs and sessions are refused (`capacity`, so a
// routing gateway places them elsewhere), the warm pool is emptied, and
// what is open goes on until the deadline. The daemon's /health (through
// the gateway) then says "draining": true.
#include <charconv>
#include <cstdio>
#include <string>
#include <thread>

#include <sandbox/client.h>
#include <sandbox/json.h>

#include "ctl/verbs.h"

namespace sandbox::ctl {

int cmd_drain(Globals g, int argc, char** argv) {
  static const char* kUsage =
      "usage: sandboxctl drain [--deadline SECONDS] [--wait] [--socket PATH]\n"
      "Stop taking new runs and sessions (root only). Running runs and open\n"
      "sessions go on until the deadline (default: the daemon's, 600 s), then are\n"
      "cancelled and closed; the warm pool is emptied at once. Only a restart of\n"
      "the daemon undoes a drain. --wait returns once no run or session is left\n"
      "(or the deadline has passed).\n";
  uint64_t deadline_s = 0;
  bool wait = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (parse_global(argc, argv, &i, &g)) continue;
    if (a == "--wait") {
      wait = true;
      continue;
    }
    if (a == "--deadline" && i + 1 < argc) {
      std::string_view v = argv[++i];
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), deadline_s);
      if (ec != std::errc() || end != v.data() + v.size() || deadline_s == 0 || deadline_s > 86'400) {
        std::fprintf(stderr, "sandboxctl: --deadline is 1 to 86400 seconds\n%s", kUsage);
        return kExitUsage;
      }
      continue;
    }
    std::fprintf(stderr, "sandboxctl: unexpected argument '%s'\n%s", argv[i], kUsage);
    return kExitUsage;
  }
  Client client(socket_path(g));
  auto st = client.drain(std::chrono::seconds(deadline_s));
  if (!st) return fail(st.error());
  if (!g.quiet)
    std::fprintf(stderr, "sandboxd is draining: %u runs and %u sessions still open\n", st->runs_active + st->runs_queued,
                 st->sessions);
  // The daemon enforces the deadline; this only bounds how long we watch.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s ? deadline_s : 600) + std::chrono::seconds(30);
  while (wait && (st->runs_active + st->runs_queued + st->sessions) > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto next = client.status();
    if (!next) return fail(next.error());
    st = std::move(next);
  }
  if (g.json) std::printf("%s\n", to_json(*st).c_str());
  return 0;
}

}  // namespace sandbox::ctl
