// sandboxctl status / pool: what the daemon is doing.
#include <getopt.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ctl/json.h"
#include "ctl/verbs.h"
#include "sandbox/client.h"

namespace sandbox::ctl {
namespace {

struct Options {
  bool json = false;
  std::string socket;
};

int parse(int argc, char** argv, const char* usage, Options* o) {
  static const option kLong[] = {{"json", no_argument, nullptr, 'J'},
                                 {"socket", required_argument, nullptr, 'S'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {nullptr, 0, nullptr, 0}};
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "+h", kLong, nullptr)) != -1) {
    switch (c) {
      case 'J': o->json = true; break;
      case 'S': o->socket = optarg; break;
      case 'h': std::fputs(usage, stdout); return 0;
      default: std::fputs(usage, stderr); return kExitUsage;
    }
  }
  if (optind < argc) {
    std::fprintf(stderr, "sandboxctl: unexpected argument '%s'\n%s", argv[optind], usage);
    return kExitUsage;
  }
  if (o->socket.empty()) {
    const char* env = std::getenv("SANDBOXD_SOCKET");
    o->socket = env && *env ? env : kDefaultSocketPath;
  }
  return -1;
}

Result<DaemonStatus> fetch(const Options& o) {
  auto st = Client(o.socket).status();
  if (!st)
    std::fprintf(stderr, "sandboxctl: %s: %s\n", std::string(error_code_name(st.error().code)).c_str(),
                 st.error().message.c_str());
  return st;
}

std::string pool_json(const DaemonStatus& s) {
  std::string j = "[";
  for (size_t i = 0; i < s.pool.size(); ++i) {
    const auto& p = s.pool[i];
    j += (i ? "," : "") + std::string("{\"language\":") + json_string(language_name(p.language)) +
         ",\"size\":" + std::to_string(p.target) + ",\"ready\":" + std::to_string(p.ready) +
         ",\"booting\":" + std::to_string(p.booting) + ",\"hits\":" + std::to_string(p.hits) +
         ",\"misses\":" + std::to_string(p.misses) + "}";
  }
  return j + "]";
}

void print_pool(const DaemonStatus& s) {
  std::printf("%-12s %5s %6s %8s %8s %8s %9s\n", "LANGUAGE", "SIZE", "READY", "BOOTING", "HITS", "MISSES", "HIT RATE");
  for (const auto& p : s.pool) {
    uint64_t total = p.hits + p.misses;
    std::string rate = total ? std::to_string(p.hits * 100 / total) + "%" : "-";
    std::printf("%-12s %5u %6u %8u %8llu %8llu %9s\n", std::string(language_name(p.language)).c_str(), p.target,
                p.ready, p.booting, static_cast<unsigned long long>(p.hits),
                static_cast<unsigned long long>(p.misses), rate.c_str());
  }
}

}  // namespace

int cmd_snapshots(int argc, char** argv) {
  // --drop is parsed here; the rest by the shared parser.
  bool drop = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i)
    if (std::string(argv[i]) == "--drop") drop = true;
    else rest.push_back(argv[i]);
  Options o;
  if (int rc = parse(static_cast<int>(rest.size()), rest.data(),
                     "usage: sandboxctl snapshots [--drop] [--json] [--socket PATH]\n"
                     "The snapshot cache: key, language, memory, size. --drop empties it (root).\n",
                     &o);
      rc >= 0)
    return rc;
  auto list = Client(o.socket).snapshots(drop);
  if (!list) {
    std::fprintf(stderr, "sandboxctl: %s: %s\n", std::string(error_code_name(list.error().code)).c_str(),
                 list.error().message.c_str());
    return list.error().code == ErrorCode::permission_denied ? kExitUsage : kExitSandboxError;
  }
  if (o.json) {
    std::string j = "[";
    for (size_t i = 0; i < list->size(); ++i) {
      const auto& e = (*list)[i];
      j += (i ? "," : "") + std::string("{\"key\":") + json_string(e.key) + ",\"language\":" +
           json_string(language_name(e.language)) + ",\"memory_mb\":" + std::to_string(e.memory_mb) +
           ",\"bytes\":" + std::to_string(e.bytes) + "}";
    }
    std::printf("%s]\n", j.c_str());
    return 0;
  }
  std::printf("%-26s %-12s %8s %10s\n", "KEY", "LANGUAGE", "MEMORY", "DISK");
  for (const auto& e : *list)
    std::printf("%-26s %-12s %6u MB %7llu MB\n", e.key.c_str(), std::string(language_name(e.language)).c_str(),
                e.memory_mb, static_cast<unsigned long long>(e.bytes >> 20));
  if (drop) std::printf("(cache emptied)\n");
  return 0;
}

int cmd_pool(int argc, char** argv) {
  Options o;
  if (int rc = parse(argc, argv, "usage: sandboxctl pool [--json] [--socket PATH]\nWarm VMs per language.\n", &o);
      rc >= 0)
    return rc;
  auto st = fetch(o);
  if (!st) return kExitSandboxError;
  if (o.json)
    std::printf("%s\n", pool_json(*st).c_str());
  else
    print_pool(*st);
  return 0;
}

int cmd_status(int argc, char** argv) {
  Options o;
  if (int rc = parse(argc, argv,
                     "usage: sandboxctl status [--json] [--socket PATH]\n"
                     "Version, accelerator, VMs, runs and the warm pool.\n",
                     &o);
      rc >= 0)
    return rc;
  auto st = fetch(o);
  if (!st) return kExitSandboxError;
  if (o.json) {
    std::printf("{\"version\":%s,\"accelerator\":%s,\"accelerator_reason\":%s,\"vms\":%u,\"max_vms\":%u,"
                "\"runs_active\":%u,\"runs_queued\":%u,\"sessions\":%u,\"host_limits\":%s,\"pool\":%s}\n",
                json_string(st->version).c_str(), json_string(st->accelerator).c_str(),
                json_string(st->accelerator_reason).c_str(), st->vms, st->max_vms, st->runs_active, st->runs_queued,
                st->sessions, json_string(st->host_limits).c_str(), pool_json(*st).c_str());
    return 0;
  }
  std::printf("sandboxd %s\naccelerator: %s (%s)\nhost limits: %s\nVMs: %u of %u\nruns: %u running, %u queued\n"
              "sessions: %u open\n\n",
              st->version.c_str(), st->accelerator.c_str(), st->accelerator_reason.c_str(), st->host_limits.c_str(),
              st->vms, st->max_vms, st->runs_active, st->runs_queued, st->sessions);
  print_pool(*st);
  return 0;
}

}  // namespace sandbox::ctl
