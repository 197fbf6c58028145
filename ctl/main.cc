// sandboxctl: the command-line client of sandboxd.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "ctl/verbs.h"

namespace {

struct Verb {
  std::string_view name;
  int (*fn)(int, char**);
  std::string_view summary;
};

constexpr Verb kVerbs[] = {
    {"run", sandbox::ctl::cmd_run, "run code in a fresh microVM"},
    {"status", sandbox::ctl::cmd_status, "version, accelerator, VMs, runs and the warm pool"},
    {"pool", sandbox::ctl::cmd_pool, "warm VMs per language: size, ready, booting, hits, misses"},
    {"snapshots", sandbox::ctl::cmd_snapshots, "the snapshot cache; --drop empties it"},
    {"session", sandbox::ctl::cmd_session, "a VM kept across calls: create, exec, put, get, ls, close"},
};

void usage(FILE* out) {
  std::fprintf(out, "usage: sandboxctl VERB [OPTIONS]\n\nVerbs:\n");
  for (const auto& v : kVerbs)
    std::fprintf(out, "  %-10s %.*s\n", std::string(v.name).c_str(), static_cast<int>(v.summary.size()), v.summary.data());
  std::fprintf(out, "\n'sandboxctl VERB --help' describes a verb.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return sandbox::ctl::kExitUsage;
  }
  std::string_view verb = argv[1];
  if (verb == "--help" || verb == "-h" || verb == "help") {
    usage(stdout);
    return 0;
  }
  for (const auto& v : kVerbs)
    if (v.name == verb) return v.fn(argc - 1, argv + 1);
  std::fprintf(stderr, "sandboxctl: unknown verb '%s'\n", argv[1]);
  usage(stderr);
  return sandbox::ctl::kExitUsage;
}
