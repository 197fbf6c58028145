// sandboxctl status / pool / snapshots / layers / images: what the daemon is doing,
// and what its VMs boot.
#include <getopt.h>

#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include <sandbox/client.h>
#include <sandbox/json.h>

#include "ctl/verbs.h"

namespace sandbox::ctl {
namespace {

// Options after the verb: the global ones, --help and (snapshots) --drop.
int parse(int argc, char** argv, const char* usage, Globals* g, bool* drop = nullptr) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (drop && a == "--drop") {
      *drop = true;
      continue;
    }
    if (parse_global(argc, argv, &i, g)) continue;
    std::fprintf(stderr, "sandboxctl: unexpected argument '%s'\n%s", argv[i], usage);
    return kExitUsage;
  }
  return -1;
}

template <class T>
std::string json_array(const std::vector<T>& items) {
  std::string j = "[";
  for (size_t i = 0; i < items.size(); ++i) j += (i ? "," : "") + to_json(items[i]);
  return j + "]";
}

void print_pool(const DaemonStatus& s) {
  std::printf("%-12s %5s %6s %8s %8s %8s %9s  %s\n", "LANGUAGE", "SIZE", "READY", "BOOTING", "HITS", "MISSES",
              "HIT RATE", "LAYER");
  for (const auto& p : s.pool) {
    uint64_t total = p.hits + p.misses;
    std::string rate = total ? std::to_string(p.hits * 100 / total) + "%" : "-";
    std::printf("%-12s %5u %6u %8u %8llu %8llu %9s  %s\n", std::string(language_name(p.language)).c_str(), p.target,
                p.ready, p.booting, static_cast<unsigned long long>(p.hits),
                static_cast<unsigned long long>(p.misses), rate.c_str(), p.layer.empty() ? "-" : p.layer.c_str());
  }
}

}  // namespace

int cmd_snapshots(Globals g, int argc, char** argv) {
  bool drop = false;
  if (int rc = parse(argc, argv,
                     "usage: sandboxctl snapshots [--drop] [--json] [--socket PATH]\n"
                     "The snapshot cache: key, language, memory, size. --drop empties it (root).\n",
                     &g, &drop);
      rc >= 0)
    return rc;
  auto list = Client(socket_path(g)).snapshots(drop);
  if (!list) {
    fail(list.error());
    return list.error().code == ErrorCode::permission_denied ? kExitUsage : kExitSandboxError;
  }
  if (g.json) {
    std::printf("%s\n", json_array(*list).c_str());
    return 0;
  }
  std::printf("%-26s %-12s %8s %10s\n", "KEY", "LANGUAGE", "MEMORY", "DISK");
  for (const auto& e : *list)
    std::printf("%-26s %-12s %6u MB %7llu MB\n", e.key.c_str(), std::string(language_name(e.language)).c_str(),
                e.memory_mb, static_cast<unsigned long long>(e.bytes >> 20));
  if (drop) std::printf("(cache emptied)\n");
  return 0;
}

int cmd_layers(Globals g, int argc, char** argv) {
  constexpr const char* kUsage =
      "usage: sandboxctl layers [--drop KEY | --all] [--json] [--socket PATH]\n"
      "The package layer cache: key, language, packages, size, last use, users, and\n"
      "builds in progress; each layer's resolved lock (every package installed, with\n"
      "its version and hash) follows it. --drop KEY removes one layer, --all every\n"
      "layer not in use (root).\n";
  std::string drop;
  bool all = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--all") {
      all = true;
      continue;
    }
    if (a == "--drop" && i + 1 < argc) {
      drop = argv[++i];
      continue;
    }
    if (parse_global(argc, argv, &i, &g)) continue;
    std::fprintf(stderr, "sandboxctl: unexpected argument '%s'\n%s", argv[i], kUsage);
    return kExitUsage;
  }
  if (all && !drop.empty()) {
    std::fprintf(stderr, "sandboxctl layers: --drop KEY and --all exclude each other\n");
    return kExitUsage;
  }
  auto list = Client(socket_path(g)).layers(drop, all);
  if (!list) {
    fail(list.error());
    return list.error().code == ErrorCode::permission_denied ? kExitUsage : kExitSandboxError;
  }
  if (g.json) {
    std::printf("%s\n", json_array(*list).c_str());
    return 0;
  }
  std::printf("%-44s %-11s %8s %-20s %5s  %s\n", "KEY", "LANGUAGE", "DISK", "LAST USE (UTC)", "USERS", "PACKAGES");
  for (const auto& l : *list) {
    std::string packages;
    for (const auto& p : l.packages) packages += (packages.empty() ? "" : " ") + p;
    char when[32] = "-";
    if (l.building) {
      std::snprintf(when, sizeof when, "building");
    } else if (l.last_used_unix_ms) {
      time_t t = static_cast<time_t>(l.last_used_unix_ms / 1000);
      tm utc{};
      gmtime_r(&t, &utc);
      std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &utc);
    }
    std::string disk = l.building ? "-" : std::to_string((l.bytes + (1 << 20) - 1) >> 20) + " MB";
    std::printf("%-44s %-11s %8s %-20s %5u  %s\n", l.key.c_str(), std::string(language_name(l.language)).c_str(),
                disk.c_str(), when, l.users, packages.c_str());
    for (const auto& entry : l.lock) std::printf("    %s\n", entry.c_str());
  }
  if (!drop.empty()) std::printf("(dropped %s)\n", drop.c_str());
  if (all) std::printf("(dropped every layer not in use)\n");
  return 0;
}

int cmd_images(Globals g, int argc, char** argv) {
  if (int rc = parse(argc, argv,
                     "usage: sandboxctl images [--json] [--socket PATH]\n"
                     "The images the daemon boots (role, file, SHA-256 verified at start-up), the\n"
                     "guest kernel's release, and the interpreters and tools in the root with\n"
                     "the versions of their Debian packages. --json adds every package.\n",
                     &g);
      rc >= 0)
    return rc;
  auto info = Client(socket_path(g)).images();
  if (!info) return fail(info.error());
  if (g.json) {
    std::printf("%s\n", to_json(*info).c_str());
    return 0;
  }
  std::printf("images in %s, verified at start-up\n%-8s %-16s %s\n", info->directory.c_str(), "ROLE", "FILE",
              "SHA-256");
  for (const auto& i : info->images)
    std::printf("%-8s %-16s %s\n", i.role.c_str(), i.file.c_str(), i.sha256.c_str());
  std::printf("\nkernel release: %s\n", info->kernel_release.empty() ? "(not in the manifest)" : info->kernel_release.c_str());
  if (info->packages.empty()) {
    std::printf("root packages: not listed (images built without a package list)\n");
    return 0;
  }
  std::printf("root packages: %zu (list SHA-256 %s)\n\n%-16s %-18s %s\n", info->packages.size(),
              info->packages_sha256.c_str(), "TOOL", "PACKAGE", "VERSION");
  for (const auto& t : info->tools)
    std::printf("%-16s %-18s %s\n", t.name.c_str(), t.package.c_str(), t.version.c_str());
  return 0;
}

int cmd_pool(Globals g, int argc, char** argv) {
  if (int rc = parse(argc, argv, "usage: sandboxctl pool [--json] [--socket PATH]\nWarm VMs per language, and per package set (pool_layers).\n", &g);
      rc >= 0)
    return rc;
  auto st = Client(socket_path(g)).status();
  if (!st) return fail(st.error());
  if (g.json)
    std::printf("%s\n", json_array(st->pool).c_str());
  else
    print_pool(*st);
  return 0;
}

int cmd_status(Globals g, int argc, char** argv) {
  if (int rc = parse(argc, argv,
                     "usage: sandboxctl status [--json] [--socket PATH]\n"
                     "Version, accelerator, VMs, runs and the warm pool; totals by outcome and run\n"
                     "latency since start (sandboxctl metrics has every series).\n",
                     &g);
      rc >= 0)
    return rc;
  auto st = Client(socket_path(g)).status();
  if (!st) return fail(st.error());
  if (g.json) {
    std::printf("%s\n", to_json(*st).c_str());
    return 0;
  }
  std::printf("sandboxd %s\naccelerator: %s (%s)\nhost limits: %s\nVMs: %u of %u\nruns: %u running, %u queued "
              "(%u per user)\nsessions: %u open\n%s\n",
              st->version.c_str(), st->accelerator.c_str(), st->accelerator_reason.c_str(), st->host_limits.c_str(),
              st->vms, st->max_vms, st->runs_active, st->runs_queued, st->runs_per_uid, st->sessions,
              st->draining ? "draining: no new runs or sessions (sandboxctl drain)\n" : "");
  print_pool(*st);
  if (auto m = Client(socket_path(g)).metrics()) print_metrics_summary(*m);
  return 0;
}

}  // namespace sandbox::ctl
