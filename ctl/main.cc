// sandboxctl: the command-line client of sandboxd.
#include <cstdio>
#include <string>
#include <string_view>

#include "ctl/verbs.h"

namespace {

struct Verb {
  std::string_view name;
  int (*fn)(sandbox::ctl::Globals, int, char**);
  std::string_view summary;
};

constexpr Verb kVerbs[] = {
    {"run", sandbox::ctl::cmd_run, "run code in a fresh microVM"},
    {"status", sandbox::ctl::cmd_status, "version, accelerator, VMs, runs and the warm pool"},
    {"pool", sandbox::ctl::cmd_pool, "warm VMs per language: size, ready, booting, hits, misses"},
    {"snapshots", sandbox::ctl::cmd_snapshots, "the snapshot cache; --drop empties it"},
    {"layers", sandbox::ctl::cmd_layers, "package layers and builds in progress; --drop KEY | --all (root)"},
    {"images", sandbox::ctl::cmd_images, "the images VMs boot: hashes, kernel, tool versions"},
    {"metrics", sandbox::ctl::cmd_metrics, "counters, gauges and latency histograms, Prometheus text"},
    {"drain", sandbox::ctl::cmd_drain, "take the daemon out of rotation: no new work, sessions finish (root)"},
    {"top", sandbox::ctl::cmd_top, "a live view: VMs, runs, sessions, latency, the pool"},
    {"session", sandbox::ctl::cmd_session, "a VM kept across calls: create, exec, put, get, ls, close"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: sandboxctl [--socket PATH] [--json] [-q] VERB [OPTIONS]\n\nVerbs:\n");
  for (const auto& v : kVerbs)
    std::fprintf(out, "  %-10s %.*s\n", std::string(v.name).c_str(), static_cast<int>(v.summary.size()), v.summary.data());
  std::fprintf(out,
               "\n--socket, --json and -q may also follow the verb. The socket defaults to\n"
               "$SANDBOXD_SOCKET, else %s.\n'sandboxctl VERB --help' describes a verb.\n",
               sandbox::kDefaultSocketPath);
}

}  // namespace

int main(int argc, char** argv) {
  sandbox::ctl::Globals globals;
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (!sandbox::ctl::parse_global(argc, argv, &i, &globals)) {
      std::fprintf(stderr, "sandboxctl: unknown option '%s' before the verb\n", argv[i]);
      usage(stderr);
      return sandbox::ctl::kExitUsage;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return sandbox::ctl::kExitUsage;
  }
  std::string_view verb = argv[i];
  if (verb == "help") {
    usage(stdout);
    return 0;
  }
  for (const auto& v : kVerbs)
    if (v.name == verb) return v.fn(globals, argc - i, argv + i);
  std::fprintf(stderr, "sandboxctl: unknown verb '%s'\n", argv[i]);
  usage(stderr);
  return sandbox::ctl::kExitUsage;
}
