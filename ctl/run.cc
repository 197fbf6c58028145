// sandboxctl run: code from -c, files or stdin, each in its own microVM,
// several at once with -j.
#include <getopt.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <sandbox/client.h>
#include <sandbox/limits.h>

#include "ctl/session_files.h"
#include "ctl/verbs.h"

namespace sandbox::ctl {
namespace {

constexpr const char* kRunUsage =
    "usage: sandboxctl run [OPTIONS] [SOURCE...]\n"
    "SOURCE is inline code, a file (language from its extension: .py .js .mjs .sh), or - for stdin.\n\n"
    "  -l, --language LANG     python, javascript or raw (shell); default: from the file\n"
    "                          extension, else python\n"
    "  -c, --code CODE         inline code (repeatable)\n"
    "  -t, --timeout SECONDS   default 30; fractions allowed (0.5)\n"
    "  -m, --memory MB         VM memory, 128-2048, default 256\n"
    "  -e, --env KEY=VALUE     environment variable for the code (repeatable)\n"
    "  -p, --package SPEC      a package the code imports (repeatable, at most 50): pinned\n"
    "                          'name==1.2.3' (python), 'name@1.2.3' (javascript) or\n"
    "                          'apt:name=1.2-3' (Debian, any language); its layer is\n"
    "                          attached read-only from the daemon's layer cache\n"
    "      --network           allow outbound network to the operator's default list of domains\n"
    "      --allow-domain DOMAIN\n"
    "                          allow outbound connections to DOMAIN (repeatable, at most 64;\n"
    "                          example.org, *.example.org for its subdomains, NAME:PORT for\n"
    "                          a port other than 443 and 80); implies --network\n"
    "      --expose GUEST[:HOST]\n"
    "                          offer guest TCP port GUEST on 127.0.0.1:HOST (HOST >= 1024;\n"
    "                          left out, a free port); the URL is printed when the VM is up.\n"
    "                          GUEST:unix offers it as a Unix socket only you can use (any\n"
    "                          local user can reach a loopback port). Repeatable, at most 10;\n"
    "                          works with no outbound network\n"
    "      --json              one JSON object per source on stdout\n"
    "  -q, --quiet             no progress output\n"
    "  -j, --concurrency N     sources run at once (default 10)\n"
    "      --upload LOCAL[:GUEST]\n"
    "                          copy a file into the VM's home before the code runs\n"
    "                          (repeatable; GUEST defaults to LOCAL's name)\n"
    "      --download GUEST[:LOCAL]\n"
    "                          copy a file out after the code ran (repeatable; LOCAL\n"
    "                          defaults to GUEST's name, - is stdout). With either, one\n"
    "                          SOURCE only\n"
    "      --socket PATH       default $SANDBOXD_SOCKET or /run/sandboxd/sandboxd.sock\n"
    "  -h, --help              this text\n\n"
    "With several sources, at most as many run at once as the daemon allows one user;\n"
    "a busy daemon (capacity) is retried with backoff for up to a minute.\n"
    "Exit status: the code's own (128+N if killed by signal N), 124 on timeout,\n"
    "125 when the sandbox failed, 2 for bad usage.\n";

struct Source {
  std::string name;
  std::string code;
  std::optional<Language> language;  // from the extension, if any
};

struct Options {
  Globals globals;
  std::optional<Language> language;
  std::chrono::milliseconds timeout{limits::kDefaultTimeoutMs};
  uint32_t memory_mb = limits::kDefaultMemoryMb;
  std::vector<std::pair<std::string, std::string>> env;
  unsigned concurrency = 10;
  std::vector<std::pair<std::string, std::string>> uploads;    // local, guest
  std::vector<std::pair<std::string, std::string>> downloads;  // guest, local
  NetworkRequest net;
  std::vector<std::string> packages;
};

std::optional<Language> language_from_extension(const std::string& path) {
  auto dot = path.rfind('.');
  if (dot == std::string::npos || path.find('/', dot) != std::string::npos) return std::nullopt;
  auto ext = path.substr(dot + 1);
  if (ext == "py") return Language::python;
  if (ext == "js" || ext == "mjs" || ext == "cjs") return Language::javascript;
  if (ext == "sh" || ext == "bash") return Language::raw;
  return std::nullopt;
}

bool read_stream(std::istream& in, std::string* out) {
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return !in.bad();
}

// Sources after the options: - (stdin), a readable file, or inline code.
int collect_sources(int argc, char** argv, int first, int inline_count, std::vector<Source>* sources) {
  auto bad = [](const std::string& msg) {
    std::fprintf(stderr, "sandboxctl run: %s\n", msg.c_str());
    return kExitUsage;
  };
  bool stdin_used = false;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-") {
      if (stdin_used) return bad("stdin (-) given twice");
      stdin_used = true;
      Source s{"<stdin>", "", std::nullopt};
      if (!read_stream(std::cin, &s.code)) return bad("cannot read stdin");
      sources->push_back(std::move(s));
      continue;
    }
    if (std::ifstream f(arg, std::ios::binary); f && access(arg.c_str(), R_OK) == 0 && arg.find('\n') == std::string::npos) {
      Source s{arg, "", language_from_extension(arg)};
      if (!read_stream(f, &s.code)) return bad("cannot read '" + arg + "'");
      sources->push_back(std::move(s));
      continue;
    }
    sources->push_back({"inline #" + std::to_string(++inline_count), arg, std::nullopt});
  }
  return -1;
}

int parse_args(int argc, char** argv, Options* o, std::vector<Source>* sources) {
  static const option kLong[] = {
      {"language", required_argument, nullptr, 'l'}, {"code", required_argument, nullptr, 'c'},
      {"timeout", required_argument, nullptr, 't'},  {"memory", required_argument, nullptr, 'm'},
      {"env", required_argument, nullptr, 'e'},      {"json", no_argument, nullptr, 'J'},
      {"quiet", no_argument, nullptr, 'q'},          {"concurrency", required_argument, nullptr, 'j'},
      {"socket", required_argument, nullptr, 'S'},   {"help", no_argument, nullptr, 'h'},
      {"upload", required_argument, nullptr, 'U'},   {"download", required_argument, nullptr, 'D'},
      {"network", no_argument, nullptr, 'N'},        {"allow-domain", required_argument, nullptr, 'A'},
      {"expose", required_argument, nullptr, 'X'},   {"package", required_argument, nullptr, 'p'},
      {nullptr, 0, nullptr, 0},
  };
  auto bad = [](const std::string& msg) {
    std::fprintf(stderr, "sandboxctl run: %s\n", msg.c_str());
    return kExitUsage;
  };
  optind = 1;
  int c;
  int inline_count = 0;
  while ((c = getopt_long(argc, argv, "+l:c:t:m:e:p:qj:h", kLong, nullptr)) != -1) {
    std::string arg = optarg ? optarg : "";
    switch (c) {
      case 'l':
        o->language = parse_language(arg);
        if (!o->language) return bad("unknown language '" + arg + "' (python, javascript, raw)");
        break;
      case 'c':
        sources->push_back({"-c #" + std::to_string(++inline_count), arg, std::nullopt});
        break;
      case 't':
        if (!parse_seconds(arg, &o->timeout)) return bad("timeout '" + arg + "' is not a positive number of seconds");
        break;
      case 'm': {
        char* end = nullptr;
        unsigned long mb = std::strtoul(arg.c_str(), &end, 10);
        if (arg.empty() || *end || mb > 1'000'000) return bad("memory '" + arg + "' is not a number of MB");
        o->memory_mb = static_cast<uint32_t>(mb);
        break;
      }
      case 'e': {
        auto eq = arg.find('=');
        if (eq == std::string::npos || eq == 0) return bad("--env wants KEY=VALUE, got '" + arg + "'");
        o->env.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
        break;
      }
      case 'p': o->packages.push_back(arg); break;
      case 'J': o->globals.json = true; break;
      case 'q': o->globals.quiet = true; break;
      case 'j': {
        char* end = nullptr;
        unsigned long n = std::strtoul(arg.c_str(), &end, 10);
        if (arg.empty() || *end || n < 1 || n > 1000) return bad("concurrency must be 1-1000");
        o->concurrency = static_cast<unsigned>(n);
        break;
      }
      case 'S': o->globals.socket = arg; break;
      case 'U': {
        auto colon = arg.find(':');
        std::string local = arg.substr(0, colon);
        std::string guest = colon == std::string::npos ? "" : arg.substr(colon + 1);
        if (guest.empty()) guest = local.substr(local.find_last_of('/') + 1);
        if (local.empty() || guest.empty()) return bad("--upload wants LOCAL[:GUEST], got '" + arg + "'");
        o->uploads.emplace_back(local, guest);
        break;
      }
      case 'D': {
        auto colon = arg.find(':');
        std::string guest = arg.substr(0, colon);
        std::string local = colon == std::string::npos ? "" : arg.substr(colon + 1);
        if (guest.empty()) return bad("--download wants GUEST[:LOCAL], got '" + arg + "'");
        o->downloads.emplace_back(guest, local);
        break;
      }
      case 'N': o->net.network = true; break;
      case 'A':
        o->net.network = true;
        o->net.allowed_domains.push_back(arg);
        break;
      case 'X': {
        PortMapping m;
        if (!parse_expose(arg, &m)) return bad("--expose wants GUEST[:HOST] port numbers, got '" + arg + "'");
        o->net.expose_ports.push_back(m);
        break;
      }
      case 'h': std::fputs(kRunUsage, stdout); return 0;
      default: std::fputs(kRunUsage, stderr); return kExitUsage;
    }
  }
  if (int rc = collect_sources(argc, argv, optind, inline_count, sources); rc >= 0) return rc;
  if (!o->net.expose_ports.empty() && sources->size() != 1) return bad("--expose works with one SOURCE");
  if (sources->empty()) return bad("nothing to run: give code, a file, or - for stdin (see --help)");
  if ((!o->uploads.empty() || !o->downloads.empty()) && sources->size() != 1)
    return bad("--upload and --download work with one SOURCE");
  return -1;
}

// A run with files or exposed ports: a session that lives for one exec
// (its ports are known, and printed, before the code starts). Files go in first;
// files come out afterwards whatever the exit status; the session is closed
// in every case. With --json, one object says how it all went.
int run_with_files(const Options& opts, const Source& src) {
  Client client(socket_path(opts.globals));
  SessionOptions so;
  so.language = opts.language.value_or(src.language.value_or(Language::python));
  so.env = opts.env;
  so.timeout = opts.timeout;
  so.memory_mb = opts.memory_mb;
  so.idle_timeout = std::chrono::milliseconds(limits::kMinSessionIdleMs);
  so.net = opts.net;
  so.packages = opts.packages;
  bool json = opts.globals.json;
  auto session = client.create_session(so);
  if (!session) {
    if (json) write_fd(1, run_json(src.name, so.language, Result<RunResult>(session.error())) + "\n");
    return json ? exit_status(Result<RunResult>(session.error())) : fail(session.error());
  }
  if (!json && !opts.globals.quiet) write_fd(2, describe_exposed(session->info().exposed_ports));
  std::optional<Error> file_error;
  for (const auto& [local, guest] : opts.uploads)
    if (auto r = put_file(*session, local, guest, false); !r) {
      file_error = Error(r.error()).context("uploading '" + local + "'");
      break;
    }
  Result<RunResult> r = file_error ? Result<RunResult>(*file_error) : Result<RunResult>(Error{});
  if (!file_error) {
    OutputCallback cb;
    if (!json) cb = [](Stream s, std::string_view d) { write_fd(s == Stream::err ? 2 : 1, d); };
    r = session->exec(src.code, cb);
    if (r)
      for (const auto& [guest, local] : opts.downloads)
        if (auto d = get_file(*session, guest, local); !d) {
          file_error = Error(d.error()).context("downloading '" + guest + "'");
          break;
        }
  }
  (void)session->close();
  int status = exit_status(r);
  if (json) {
    write_fd(1, run_json(src.name, so.language, r, r ? file_error : std::nullopt) + "\n");
  } else if (!r) {
    fail(r.error());
  } else {
    if (r->timed_out && !opts.globals.quiet) notice("timed out after " + std::to_string(opts.timeout.count()) + " ms");
    if (file_error) fail(*file_error);
  }
  if (status == 0 && file_error) status = file_error->code == ErrorCode::invalid_argument ? kExitUsage : kExitSandboxError;
  return status;
}

// Runs at once: what was asked, but no more than the daemon takes from one
// user (more would only come back as `capacity`).
unsigned effective_concurrency(const Client& client, const Options& opts, size_t sources) {
  unsigned n = std::min<unsigned>(opts.concurrency, static_cast<unsigned>(sources));
  if (n > 1)
    if (auto st = client.status(); st && st->runs_per_uid > 0) n = std::min(n, st->runs_per_uid);
  return std::max(n, 1u);
}

}  // namespace

int cmd_run(Globals globals, int argc, char** argv) {
  Options opts;
  opts.globals = std::move(globals);
  std::vector<Source> sources;
  if (int rc = parse_args(argc, argv, &opts, &sources); rc >= 0) return rc;
  if (!opts.uploads.empty() || !opts.downloads.empty() || !opts.net.expose_ports.empty())
    return run_with_files(opts, sources[0]);

  Client client(socket_path(opts.globals));
  bool json = opts.globals.json, quiet = opts.globals.quiet;
  std::vector<std::optional<Result<RunResult>>> results(sources.size());
  std::vector<Language> languages(sources.size());
  std::mutex out_mu;
  bool stream_live = sources.size() == 1 && !json;
  std::atomic<size_t> next{0};

  auto work = [&] {
    for (size_t i; (i = next++) < sources.size();) {
      const Source& src = sources[i];
      RunRequest req;
      req.language = opts.language.value_or(src.language.value_or(Language::python));
      languages[i] = req.language;
      req.code = src.code;
      req.env = opts.env;
      req.timeout = opts.timeout;
      req.memory_mb = opts.memory_mb;
      req.net = opts.net;
      req.packages = opts.packages;
      OutputCallback cb;
      if (stream_live) cb = [](Stream s, std::string_view d) { write_fd(s == Stream::err ? 2 : 1, d); };
      auto r = client.run(req, cb);
      std::lock_guard lock(out_mu);
      std::string prefix = sources.size() > 1 ? src.name + ": " : "";
      if (json) {
        write_fd(1, run_json(src.name, req.language, r) + "\n");
      } else {
        if (!stream_live && r) {
          if (!quiet) write_fd(2, "==> " + src.name + " <==\n");
          write_fd(1, r->stdout_data);
          write_fd(2, r->stderr_data);
        }
        if (!r)
          fail(r.error(), prefix);
        else if (r->timed_out && !quiet)
          notice(prefix + "timed out after " + std::to_string(opts.timeout.count()) + " ms");
        if (r && (r->stdout_truncated || r->stderr_truncated) && !quiet)
          notice(prefix + "output truncated to the sandbox's limits");
      }
      results[i].emplace(std::move(r));
    }
  };
  unsigned n = effective_concurrency(client, opts, sources.size());
  std::vector<std::thread> workers;
  for (unsigned t = 1; t < n; ++t) workers.emplace_back(work);
  work();
  for (auto& t : workers) t.join();

  // The first failing source, in argument order, decides the exit status.
  for (auto& r : results)
    if (int st = exit_status(*r); st != 0) return st;
  return 0;
}

}  // namespace sandbox::ctl
