// sandboxctl metrics: the daemon's counters, gauges and histograms, as the
// Prometheus text format the daemon renders (the gateway's /metrics serves
// the same text).
#include <cstdio>
#include <string>

#include <sandbox/client.h>
#include <sandbox/json.h>

#include "ctl/verbs.h"

namespace sandbox::ctl {

int cmd_metrics(Globals g, int argc, char** argv) {
  static const char* kUsage =
      "usage: sandboxctl metrics [--json] [--socket PATH]\n"
      "The daemon's metrics in Prometheus' text format (version 0.0.4): runs by\n"
      "result, errors and refusals by code, timeouts, boot failures, pool hits and\n"
      "misses, snapshot restores, sessions, file transfers; VMs by state, pool,\n"
      "queue, memory committed; run latency per phase and path. --json prints one\n"
      "object of series -> value.\n";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (parse_global(argc, argv, &i, &g)) continue;
    std::fprintf(stderr, "sandboxctl: unexpected argument '%s'\n%s", argv[i], kUsage);
    return kExitUsage;
  }
  auto text = Client(socket_path(g)).metrics();
  if (!text) return fail(text.error());
  if (!g.json) {
    std::fwrite(text->data(), 1, text->size(), stdout);
    return 0;
  }
  // Each sample line is "series value"; the series name keeps its labels.
  std::string out = "{";
  size_t pos = 0;
  bool first = true;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    std::string_view line(text->data() + pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos) continue;
    out += (first ? "" : ",") + json_string(line.substr(0, sp)) + ":" + std::string(line.substr(sp + 1));
    first = false;
  }
  std::printf("%s}\n", out.c_str());
  return 0;
}

}  // namespace sandbox::ctl
