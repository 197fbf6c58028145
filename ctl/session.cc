// sandboxctl session: a VM kept across calls, and its files.
#include <getopt.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include <sandbox/client.h>
#include <sandbox/json.h>
#include <sandbox/limits.h>

#include "ctl/session_files.h"
#include "ctl/verbs.h"

namespace sandbox::ctl {
namespace {

constexpr const char* kSessionUsage =
    "usage: sandboxctl session ACTION [OPTIONS] ...\n\n"
    "  create [-l LANG] [-t SECONDS] [-m MB] [-e KEY=VALUE]... [--idle SECONDS]\n"
    "         [--network] [--allow-domain DOMAIN]... [--expose GUEST[:HOST]]...\n"
    "         [-p SPEC]...\n"
    "                          open a session; prints its id (and, on stderr, the URL of\n"
    "                          each exposed port). -t is each exec's default timeout (30),\n"
    "                          --idle closes it after that long unused (10-3600, default\n"
    "                          300); network and package (-p) flags as for run\n"
    "  exec ID [-t SECONDS] [--json] SOURCE\n"
    "                          run inline code, a file or - (stdin) in the session;\n"
    "                          exit status as for run\n"
    "  put ID LOCAL GUEST [-x] copy a local file (or - for stdin) into the session's home;\n"
    "                          -x makes it executable\n"
    "  get ID GUEST [LOCAL]    copy a file out (LOCAL defaults to GUEST's name; - is stdout)\n"
    "  ls [--json]             your open sessions\n"
    "  ls ID [DIR] [--json]    the entries of a directory in the session (default: home)\n"
    "  network ID [--allow-domain DOMAIN]... [--network] | --off\n"
    "                          replace the session's outbound allowlist while it runs\n"
    "                          (--off: none); connections it no longer admits are reset\n"
    "  close ID                destroy the session's VM\n\n"
    "Common: --socket PATH (default $SANDBOXD_SOCKET or /run/sandboxd/sandboxd.sock), --json, -h.\n"
    "Guest paths are relative to the session's home; at most 50 MB per file.\n";

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "sandboxctl session: %s (see --help)\n", msg.c_str());
  return kExitUsage;
}

std::string iso_time(uint64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Args {
  Globals globals;
  std::optional<Language> language;
  std::optional<std::chrono::milliseconds> timeout;
  std::optional<std::chrono::milliseconds> idle;
  uint32_t memory_mb = limits::kDefaultMemoryMb;
  std::vector<std::pair<std::string, std::string>> env;
  bool executable = false;
  NetworkRequest net;
  std::vector<std::string> packages;
  bool off = false;
  std::vector<std::string> positional;
};

// Options may come anywhere after the action.
int parse(int argc, char** argv, Args* a) {
  static const option kLong[] = {
      {"language", required_argument, nullptr, 'l'}, {"timeout", required_argument, nullptr, 't'},
      {"memory", required_argument, nullptr, 'm'},   {"env", required_argument, nullptr, 'e'},
      {"idle", required_argument, nullptr, 'I'},     {"json", no_argument, nullptr, 'J'},
      {"executable", no_argument, nullptr, 'x'},     {"socket", required_argument, nullptr, 'S'},
      {"quiet", no_argument, nullptr, 'q'},          {"help", no_argument, nullptr, 'h'},
      {"network", no_argument, nullptr, 'N'},        {"allow-domain", required_argument, nullptr, 'A'},
      {"expose", required_argument, nullptr, 'X'},   {"off", no_argument, nullptr, 'O'},
      {"package", required_argument, nullptr, 'p'},  {nullptr, 0, nullptr, 0},
  };
  optind = 1;
  int c;
  // "-" as a SOURCE or LOCAL is positional, which getopt's permutation keeps.
  while ((c = getopt_long(argc, argv, "l:t:m:e:p:xqh", kLong, nullptr)) != -1) {
    std::string arg = optarg ? optarg : "";
    switch (c) {
      case 'l':
        a->language = parse_language(arg);
        if (!a->language) return usage_error("unknown language '" + arg + "' (python, javascript, raw)");
        break;
      case 't': {
        std::chrono::milliseconds ms;
        if (!parse_seconds(arg, &ms)) return usage_error("timeout '" + arg + "' is not a positive number of seconds");
        a->timeout = ms;
        break;
      }
      case 'I': {
        std::chrono::milliseconds ms;
        if (!parse_seconds(arg, &ms)) return usage_error("idle timeout '" + arg + "' is not a positive number of seconds");
        a->idle = ms;
        break;
      }
      case 'm': {
        char* end = nullptr;
        unsigned long mb = std::strtoul(arg.c_str(), &end, 10);
        if (arg.empty() || *end || mb > 1'000'000) return usage_error("memory '" + arg + "' is not a number of MB");
        a->memory_mb = static_cast<uint32_t>(mb);
        break;
      }
      case 'e': {
        auto eq = arg.find('=');
        if (eq == std::string::npos || eq == 0) return usage_error("--env wants KEY=VALUE, got '" + arg + "'");
        a->env.emplace_back(arg.substr(0, eq), arg.substr(eq + 1));
        break;
      }
      case 'J': a->globals.json = true; break;
      case 'q': a->globals.quiet = true; break;
      case 'x': a->executable = true; break;
      case 'p': a->packages.push_back(arg); break;
      case 'S': a->globals.socket = arg; break;
      case 'N': a->net.network = true; break;
      case 'O': a->off = true; break;
      case 'A':
        a->net.network = true;
        a->net.allowed_domains.push_back(arg);
        break;
      case 'X': {
        PortMapping m;
        if (!parse_expose(arg, &m)) return usage_error("--expose wants GUEST[:HOST] port numbers, got '" + arg + "'");
        a->net.expose_ports.push_back(m);
        break;
      }
      case 'h': std::fputs(kSessionUsage, stdout); return 0;
      default: std::fputs(kSessionUsage, stderr); return kExitUsage;
    }
  }
  for (int i = optind; i < argc; ++i) a->positional.push_back(argv[i]);
  return -1;
}

bool read_all(std::istream& in, std::string* out) {
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return !in.bad();
}

int do_create(const Args& a) {
  if (!a.positional.empty()) return usage_error("create takes no arguments");
  SessionOptions o;
  o.language = a.language.value_or(Language::python);
  o.env = a.env;
  if (a.timeout) o.timeout = *a.timeout;
  if (a.idle) o.idle_timeout = *a.idle;
  o.memory_mb = a.memory_mb;
  o.net = a.net;
  o.packages = a.packages;
  auto s = Client(socket_path(a.globals)).create_session(o);
  if (!s) return fail(s.error());
  if (!a.globals.json && !a.globals.quiet) write_fd(2, describe_exposed(s->info().exposed_ports));
  if (a.globals.json)
    write_fd(1, "{\"session\":" + json_string(s->id()) + "}\n");
  else
    write_fd(1, s->id() + "\n");
  return 0;
}

int do_exec(const Args& a) {
  if (a.positional.size() != 2) return usage_error("exec wants ID and one SOURCE");
  const std::string& src = a.positional[1];
  std::string code;
  if (src == "-") {
    if (!read_all(std::cin, &code)) return usage_error("cannot read stdin");
  } else if (std::ifstream f(src, std::ios::binary); f && ::access(src.c_str(), R_OK) == 0) {
    if (!read_all(f, &code)) return usage_error("cannot read '" + src + "'");
  } else {
    code = src;
  }
  auto session = Client(socket_path(a.globals)).session(a.positional[0]);
  OutputCallback cb;
  if (!a.globals.json) cb = [](Stream s, std::string_view d) { write_fd(s == Stream::err ? 2 : 1, d); };
  auto r = session.exec(code, cb, a.timeout.value_or(std::chrono::milliseconds(0)));
  if (a.globals.json) {
    write_fd(1, run_json(src == "-" ? "<stdin>" : src, std::nullopt, r) + "\n");
  } else if (!r) {
    return fail(r.error());
  } else if (!a.globals.quiet) {
    if (r->timed_out) notice("timed out");
    if (r->state_lost) notice("the interpreter was restarted; earlier session state is gone");
    if (r->stdout_truncated || r->stderr_truncated) notice("output truncated to the sandbox's limits");
  }
  return exit_status(r);
}

int do_put(const Args& a) {
  if (a.positional.size() != 3) return usage_error("put wants ID LOCAL GUEST");
  auto r = put_file(Client(socket_path(a.globals)).session(a.positional[0]), a.positional[1], a.positional[2], a.executable);
  return r ? 0 : fail(r.error());
}

int do_get(const Args& a) {
  if (a.positional.size() != 2 && a.positional.size() != 3) return usage_error("get wants ID GUEST [LOCAL]");
  auto r = get_file(Client(socket_path(a.globals)).session(a.positional[0]), a.positional[1],
                    a.positional.size() == 3 ? a.positional[2] : std::string());
  return r ? 0 : fail(r.error());
}

int do_ls(const Args& a) {
  Client client(socket_path(a.globals));
  if (a.positional.empty()) {
    auto list = client.sessions();
    if (!list) return fail(list.error());
    std::string out;
    if (a.globals.json) {
      out = "[";
      for (size_t i = 0; i < list->size(); ++i) out += (i ? "," : "") + to_json((*list)[i]);
      out += "]\n";
    } else {
      char line[256];
      std::snprintf(line, sizeof line, "%-28s %-10s %6s %6s %-20s %s\n", "SESSION", "LANGUAGE", "MB", "EXECS",
                    "LAST ACTIVITY", "IDLE TIMEOUT");
      out = line;
      for (const auto& s : *list) {
        std::snprintf(line, sizeof line, "%-28s %-10s %6u %6llu %-20s %llds\n", s.id.c_str(),
                      std::string(language_name(s.language)).c_str(), s.memory_mb,
                      static_cast<unsigned long long>(s.exec_count), iso_time(s.last_activity_unix_ms).c_str(),
                      static_cast<long long>(s.idle_timeout.count() / 1000));
        out += line;
        for (const auto& p : s.exposed_ports)
          out += "    port " + std::to_string(p.internal) + " -> " + p.url + "\n";
        if (!s.allowed_domains.empty()) {
          out += "    network:";
          for (const auto& d : s.allowed_domains) out += " " + d;
          out += "\n";
        }
      }
    }
    write_fd(1, out);
    return 0;
  }
  if (a.positional.size() > 2) return usage_error("ls wants [ID [DIR]]");
  auto listing = client.session(a.positional[0]).list_files(a.positional.size() == 2 ? a.positional[1] : "");
  if (!listing) return fail(listing.error());
  if (a.globals.json) {
    write_fd(1, to_json(*listing) + "\n");
    return 0;
  }
  std::string out;
  for (const auto& e : listing->entries)
    out += (e.is_dir ? e.name + "/" : e.name) + (e.is_dir ? "" : "\t" + std::to_string(e.size)) + "\n";
  write_fd(1, out);
  if (listing->truncated)
    notice("only the first " + std::to_string(listing->entries.size()) + " entries are listed; the directory has more");
  return 0;
}

int do_network(const Args& a) {
  if (a.positional.size() != 1) return usage_error("network wants ID");
  if (a.off == a.net.network) return usage_error("network wants --allow-domain DOMAIN (or --network), or --off");
  if (!a.net.expose_ports.empty()) return usage_error("a session's exposed ports are set when it is created");
  auto r = Client(socket_path(a.globals)).session(a.positional[0]).set_network(a.net.allowed_domains, a.net.network);
  if (!r) return fail(r.error());
  if (a.globals.json) write_fd(1, to_json(*r) + "\n");
  return 0;
}

int do_close(const Args& a) {
  if (a.positional.size() != 1) return usage_error("close wants ID");
  auto r = Client(socket_path(a.globals)).session(a.positional[0]).close();
  return r ? 0 : fail(r.error());
}

}  // namespace

int cmd_session(Globals globals, int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kSessionUsage, stderr);
    return kExitUsage;
  }
  std::string action = argv[1];
  if (action == "-h" || action == "--help") {
    std::fputs(kSessionUsage, stdout);
    return 0;
  }
  Args a;
  a.globals = std::move(globals);
  if (int rc = parse(argc - 1, argv + 1, &a); rc >= 0) return rc;
  if (action == "create") return do_create(a);
  if (action == "exec") return do_exec(a);
  if (action == "put") return do_put(a);
  if (action == "get") return do_get(a);
  if (action == "ls") return do_ls(a);
  if (action == "close") return do_close(a);
  if (action == "network") return do_network(a);
  return usage_error("unknown action '" + action + "'");
}

}  // namespace sandbox::ctl
