// sandboxctl top: a live view of the daemon for a person at a terminal:
// VMs, runs, sessions, the pool, throughput, errors and latency, redrawn
// in place every interval from status and metrics.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <sandbox/client.h>

#include "ctl/verbs.h"

namespace sandbox::ctl {
namespace {

using Series = std::map<std::string, double>;

// "name{labels} value" lines of the metrics text.
Series parse_metrics(const std::string& text) {
  Series out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

double sum_prefix(const Series& s, const std::string& prefix) {
  double total = 0;
  for (auto it = s.lower_bound(prefix); it != s.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    total += it->second;
  return total;
}

// The q-quantile of a histogram's total phase on `path`, as the upper edge
// of the bucket it falls in ("-" without samples).
std::string quantile(const Series& s, const std::string& path, double q) {
  std::string base = "sandboxd_run_phase_seconds_bucket{phase=\"total\",path=\"" + path + "\",le=\"";
  double count = 0;
  if (auto it = s.find(base + "+Inf\"}"); it != s.end()) count = it->second;
  if (count <= 0) return "-";
  std::vector<std::pair<double, double>> edges;  // (le, cumulative)
  for (auto it = s.lower_bound(base); it != s.end() && it->first.compare(0, base.size(), base) == 0; ++it) {
    std::string le = it->first.substr(base.size(), it->first.size() - base.size() - 2);
    if (le != "+Inf") edges.emplace_back(std::strtod(le.c_str(), nullptr), it->second);
  }
  std::sort(edges.begin(), edges.end());
  for (const auto& [le, cum] : edges)
    if (cum >= q * count) {
      char buf[32];
      std::snprintf(buf, sizeof buf, le < 1 ? "%.0f ms" : "%.1f s", le < 1 ? le * 1000 : le);
      return std::string("<") + buf;
    }
  return ">300 s";
}

std::string totals_line(const Series& m) {
  auto v = [&](const std::string& k) { auto it = m.find(k); return it == m.end() ? 0.0 : it->second; };
  auto both = [&](const char* result) {
    return v(std::string("sandboxd_runs_total{kind=\"run\",result=\"") + result + "\"}") +
           v(std::string("sandboxd_runs_total{kind=\"session_exec\",result=\"") + result + "\"}");
  };
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%.0f ok, %.0f nonzero exit, %.0f timed out, %.0f killed, %.0f errors; %.0f refused; %.0f boot failures",
                both("ok"), both("exit_nonzero"), both("timeout"), both("signal"),
                sum_prefix(m, "sandboxd_errors_total") - sum_prefix(m, "sandboxd_denials_total"),
                sum_prefix(m, "sandboxd_denials_total"), v("sandboxd_boot_failures_total"));
  return buf;
}

void frame(const DaemonStatus& st, const Series& m, double runs_per_s, bool tty) {
  if (tty) std::fputs("\x1b[H\x1b[2J", stdout);  // home, clear: redraw in place
  auto v = [&](const std::string& k) { auto it = m.find(k); return it == m.end() ? 0.0 : it->second; };
  std::printf("sandboxd %s  accelerator %s\n", st.version.c_str(), st.accelerator.c_str());
  std::printf("VMs     %u of %u: %.0f leased, %.0f warm ready, %.0f warm booting, %.0f other; %.0f MiB committed\n",
              st.vms, st.max_vms, v("sandboxd_vms{state=\"leased\"}"), v("sandboxd_vms{state=\"pool_ready\"}"),
              v("sandboxd_vms{state=\"pool_booting\"}"), v("sandboxd_vms{state=\"other\"}"),
              v("sandboxd_memory_committed_bytes") / (1 << 20));
  std::printf("runs    %u running, %u queued (%u per user); %.2f/s finishing\n", st.runs_active, st.runs_queued,
              st.runs_per_uid, runs_per_s);
  std::printf("sessions %u open (%.0f opened, %.0f closed since start)\n", st.sessions,
              v("sandboxd_sessions_opened_total"), v("sandboxd_sessions_closed_total"));
  std::printf("totals  %s\n", totals_line(m).c_str());
  std::printf("\n%-10s %8s %10s %10s\n", "RUN PATH", "RUNS", "P50", "P95");
  for (const char* path : {"warm", "snapshot", "cold"})
    std::printf("%-10s %8.0f %10s %10s\n", path,
                v(std::string("sandboxd_run_phase_seconds_count{phase=\"total\",path=\"") + path + "\"}"),
                quantile(m, path, 0.5).c_str(), quantile(m, path, 0.95).c_str());
  std::printf("\n%-12s %5s %6s %8s %8s %8s\n", "POOL", "SIZE", "READY", "BOOTING", "HITS", "MISSES");
  for (const auto& p : st.pool)
    std::printf("%-12s %5u %6u %8u %8llu %8llu\n", std::string(language_name(p.language)).c_str(), p.target, p.ready,
                p.booting, static_cast<unsigned long long>(p.hits), static_cast<unsigned long long>(p.misses));
  if (!tty) std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

void print_metrics_summary(const std::string& text) {
  auto m = parse_metrics(text);
  std::printf("\nsince start: %s\n", totals_line(m).c_str());
  std::printf("run latency (p50/p95):");
  for (const char* path : {"warm", "snapshot", "cold"})
    std::printf(" %s %s/%s", path, quantile(m, path, 0.5).c_str(), quantile(m, path, 0.95).c_str());
  std::printf("\n");
}

int cmd_top(Globals g, int argc, char** argv) {
  static const char* kUsage =
      "usage: sandboxctl top [--interval SECONDS] [-n FRAMES] [--socket PATH]\n"
      "A live view of the daemon, redrawn in place: VMs by state, runs running and\n"
      "queued, sessions, runs finishing per second, totals by outcome, run latency\n"
      "per path (p50, p95) and the warm pool. Ctrl-C ends it; -n ends it after\n"
      "FRAMES frames (without a terminal, frames follow each other).\n";
  std::chrono::milliseconds interval{1000};
  long frames = -1;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if ((a == "--interval" || a == "-i") && i + 1 < argc) {
      if (!parse_seconds(argv[++i], &interval) || interval.count() < 100) {
        std::fprintf(stderr, "sandboxctl: --interval takes seconds, at least 0.1\n");
        return kExitUsage;
      }
      continue;
    }
    if ((a == "-n" || a == "--frames") && i + 1 < argc) {
      char* end = nullptr;
      frames = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || frames <= 0) {
        std::fprintf(stderr, "sandboxctl: -n takes a positive number of frames\n");
        return kExitUsage;
      }
      continue;
    }
    if (parse_global(argc, argv, &i, &g)) continue;
    std::fprintf(stderr, "sandboxctl: unexpected argument '%s'\n%s", argv[i], kUsage);
    return kExitUsage;
  }
  Client client(socket_path(g));
  bool tty = ::isatty(STDOUT_FILENO) == 1;
  double last_runs = -1;
  auto last_at = std::chrono::steady_clock::now();
  for (long n = 0; frames < 0 || n < frames; ++n) {
    if (n) std::this_thread::sleep_for(interval);
    auto st = client.status();
    if (!st) return fail(st.error());
    auto text = client.metrics();
    if (!text) return fail(text.error());
    auto m = parse_metrics(*text);
    double runs = sum_prefix(m, "sandboxd_runs_total");
    auto now = std::chrono::steady_clock::now();
    double secs = std::chrono::duration<double>(now - last_at).count();
    double rate = last_runs < 0 || secs <= 0 ? 0 : (runs - last_runs) / secs;
    last_runs = runs;
    last_at = now;
    frame(*st, m, rate, tty);
  }
  return 0;
}

}  // namespace sandbox::ctl
