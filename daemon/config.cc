#include "daemon/config.h"

#include <charconv>
#include <functional>
#include <set>

#include "common/net_rules.h"
#include "common/packages.h"
#include "daemon/builder.h"
#include "daemon/net_ranges.h"
#include "daemon/object_store.h"

namespace sandbox::daemon {
namespace {

using Setter = std::function<Result<void>(Config&, std::string_view)>;
using Getter = std::function<std::string(const Config&)>;

struct Key {
  std::string_view name;
  std::string_view help;
  Setter set;
  Getter get;
};

Getter get_uint(uint32_t Config::*field) {
  return [=](const Config& c) { return std::to_string(c.*field); };
}
Getter get_string(std::string Config::*field) {
  return [=](const Config& c) { return c.*field; };
}
Getter get_bool(bool Config::*field) {
  return [=](const Config& c) { return std::string(c.*field ? "on" : "off"); };
}
template <class T>
Getter get_list(std::vector<T> Config::*field) {
  return [=](const Config& c) {
    std::string out;
    for (auto id : c.*field) out += (out.empty() ? "" : ",") + std::to_string(id);
    return out;
  };
}

Error bad_value(std::string_view what) { return Error::make(ErrorCode::invalid_argument, std::string(what)); }

Result<uint64_t> parse_uint(std::string_view v, uint64_t min, uint64_t max) {
  uint64_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty())
    return bad_value("'" + std::string(v) + "' is not a number");
  if (out < min || out > max)
    return bad_value(std::string(v) + " is outside " + std::to_string(min) + "-" + std::to_string(max));
  return out;
}

Setter uint_key(uint32_t Config::*field, uint64_t min, uint64_t max) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    auto n = parse_uint(v, min, max);
    if (!n) return std::move(n).error();
    c.*field = static_cast<uint32_t>(*n);
    return ok();
  };
}

Setter path_key(std::string Config::*field) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    if (v.empty() || v.find('\0') != std::string_view::npos || v.find('\n') != std::string_view::npos)
      return bad_value("not a usable path");
    c.*field = std::string(v);
    return ok();
  };
}

// A user or group name: what useradd accepts, nothing that could smuggle
// a path or option.
Setter name_key(std::string Config::*field) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    if (v.empty() || v.size() > 32 || v.front() == '-' ||
        v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string_view::npos)
      return bad_value("'" + std::string(v) + "' is not a user or group name");
    c.*field = std::string(v);
    return ok();
  };
}

Setter optional_path_key(std::string Config::*field) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    if (!v.empty() && (v.front() != '/' || v.find('\0') != std::string_view::npos ||
                       v.find('\n') != std::string_view::npos || v.find("/../") != std::string_view::npos ||
                       v.ends_with("/..")))
      return bad_value("'" + std::string(v) + "' is not an absolute path");
    c.*field = std::string(v);
    return ok();
  };
}

// An index URL the builder's egress is limited to: http(s), a host, an
// optional port and path; nothing a command line or the relay could misread.
Result<void> check_url(std::string_view v) {
  auto rest = v.starts_with("https://") ? v.substr(8) : v.starts_with("http://") ? v.substr(7) : std::string_view{};
  if (rest.empty() || rest.front() == '/' || v.size() > 512 ||
      v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/%") != std::string_view::npos)
    return bad_value("'" + std::string(v) + "' is not an http(s)://HOST[:PORT][/PATH] URL");
  // Its host becomes the builder's allowlist entry: it must be one.
  if (auto h = index_host_entry(v); !h) return bad_value(h.error().message);
  return ok();
}

Setter url_key(std::string Config::*field) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    if (auto r = check_url(v); !r) return r;
    c.*field = std::string(v);
    return ok();
  };
}

// "URL SUITE COMPONENT...": one line of a sources.list without options;
// each word reaches apt's configuration in the builder, so none may carry
// more than a path's characters.
Result<void> check_apt_source(std::string_view v) {
  std::vector<std::string_view> words;
  while (!v.empty()) {
    auto space = v.find(' ');
    if (space != 0) words.push_back(v.substr(0, space));
    if (space == std::string_view::npos) break;
    v.remove_prefix(space + 1);
  }
  if (words.size() < 2 || words.size() > 10) return bad_value("expected 'URL SUITE [COMPONENT...]'");
  if (auto r = check_url(words[0]); !r) return r;
  for (size_t i = 1; i < words.size(); ++i)
    if (words[i].size() > 64 || words[i].front() == '-' ||
        words[i].find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/") !=
            std::string_view::npos)
      return bad_value("'" + std::string(words[i]) + "' is not a suite or component name");
  return ok();
}

Setter bool_key(bool Config::*field) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    if (v != "on" && v != "off") return bad_value("'" + std::string(v) + "' is not on or off");
    c.*field = v == "on";
    return ok();
  };
}

template <class T>
Setter id_list_key(std::vector<T> Config::*field) {
  return [=](Config& c, std::string_view v) -> Result<void> {
    std::vector<T> ids;
    while (!v.empty()) {
      auto comma = v.find(',');
      auto item = v.substr(0, comma);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      if (!item.empty()) {
        auto n = parse_uint(item, 0, UINT32_MAX - 1);
        if (!n) return std::move(n).error();
        ids.push_back(static_cast<T>(*n));
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
    c.*field = std::move(ids);
    return ok();
  };
}

// A comma-separated list of items each `check` accepts.
Setter string_list_key(std::vector<std::string> Config::*field, std::function<Result<void>(std::string_view)> check,
                       char separator = ',') {
  return [=](Config& c, std::string_view v) -> Result<void> {
    std::vector<std::string> items;
    while (!v.empty()) {
      auto comma = v.find(separator);
      auto item = v.substr(0, comma);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      if (!item.empty()) {
        if (auto r = check(item); !r) return r;
        items.emplace_back(item);
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
    c.*field = std::move(items);
    return ok();
  };
}
Getter get_strings(std::vector<std::string> Config::*field, std::string_view separator = ",") {
  return [=](const Config& c) {
    std::string out;
    for (const auto& s : c.*field) out += (out.empty() ? "" : std::string(separator)) + s;
    return out;
  };
}

}  // namespace

Result<PoolLayer> parse_pool_layer(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error::make(ErrorCode::invalid_argument, "pool layer '" + std::string(text) + "': " + std::string(why));
  };
  auto first = text.find(':');
  auto second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos) return bad("not LANGUAGE:COUNT:PACKAGES");
  PoolLayer p;
  auto language = schema::EnumNames<Language>::parse(text.substr(0, first));
  if (!language) return bad("the language is python, javascript or raw (raw: Debian packages only)");
  p.language = *language;
  auto count = text.substr(first + 1, second - first - 1);
  if (count.empty() || count.size() > 2 || count.find_first_not_of("0123456789") != std::string_view::npos)
    return bad("the count is a number from 1 to 16");
  p.count = static_cast<uint32_t>(std::stoul(std::string(count)));
  if (p.count < 1 || p.count > 16) return bad("the count is a number from 1 to 16");
  std::string_view rest = text.substr(second + 1);
  while (!rest.empty()) {
    auto sp = rest.find(' ');
    if (auto item = rest.substr(0, sp); !item.empty()) p.packages.emplace_back(item);
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp + 1);
  }
  if (p.packages.empty()) return bad("no packages");
  // A request's syntax, and exact versions: a pool of a range would serve
  // whatever the index resolved at start, under one key, for good.
  auto specs = parse_packages(p.language, p.packages, PackagePolicy{});
  if (!specs) return bad(specs.error().message);
  p.packages = canonical_packages(*specs);
  return p;
}

namespace {

const std::vector<Key>& keys() {
  static const std::vector<Key> k = {
      {"socket", "control socket path", path_key(&Config::socket), get_string(&Config::socket)},
      {"images", "directory with the guest images and their manifest", path_key(&Config::images), get_string(&Config::images)},
      {"state_dir", "directory for daemon state", path_key(&Config::state_dir), get_string(&Config::state_dir)},
      {"qemu", "QEMU system emulator binary", path_key(&Config::qemu), get_string(&Config::qemu)},
      {"accel", "accelerator: auto (probe KVM, else TCG), kvm or tcg",
       [](Config& c, std::string_view v) -> Result<void> {
         if (v == "auto") c.accel = Accel::automatic;
         else if (v == "kvm") c.accel = Accel::kvm;
         else if (v == "tcg") c.accel = Accel::tcg;
         else return bad_value("'" + std::string(v) + "' is not one of auto, kvm, tcg");
         return ok();
       },
       [](const Config& c) { return std::string(accel_name(c.accel)); }},
      {"allowed_uids", "comma-separated uids allowed on the socket (root and the daemon's uid always are)",
       id_list_key(&Config::allowed_uids), get_list(&Config::allowed_uids)},
      {"allowed_gids", "comma-separated gids whose members are allowed on the socket",
       id_list_key(&Config::allowed_gids), get_list(&Config::allowed_gids)},
      {"boot_timeout_ms", "deadline for a VM to boot to the agent's hello",
       uint_key(&Config::boot_timeout_ms, 500, 600'000), get_uint(&Config::boot_timeout_ms)},
      {"boot_retries", "extra boots tried when one hangs", uint_key(&Config::boot_retries, 0, 5), get_uint(&Config::boot_retries)},
      {"vcpus", "vCPUs per VM", uint_key(&Config::vcpus, 1, 64), get_uint(&Config::vcpus)},
      {"tcg_tb_size_mb", "TCG translation cache per VM in MiB", uint_key(&Config::tcg_tb_size_mb, 8, 1024), get_uint(&Config::tcg_tb_size_mb)},
      {"kill_slack_ms", "time past a run's timeout before the daemon kills the VM",
       uint_key(&Config::kill_slack_ms, 1000, 60'000), get_uint(&Config::kill_slack_ms)},
      {"kill_grace_ms", "SIGTERM-to-SIGKILL grace at a run's timeout", uint_key(&Config::kill_grace_ms, 0, 30'000), get_uint(&Config::kill_grace_ms)},
      {"pids_max", "processes and threads one run may have at once", uint_key(&Config::pids_max, 16, 65'536), get_uint(&Config::pids_max)},
      {"max_concurrent_vms", "VMs alive at once, warm ones included (0: from host memory)",
       uint_key(&Config::max_concurrent_vms, 0, 1000), get_uint(&Config::max_concurrent_vms)},
      {"max_runs_per_uid", "runs one uid may have running or queued (0: 3/4 of the VMs)",
       uint_key(&Config::max_runs_per_uid, 0, 100'000), get_uint(&Config::max_runs_per_uid)},
      {"queue_timeout_ms", "how long a run waits for a VM slot", uint_key(&Config::queue_timeout_ms, 0, 600'000), get_uint(&Config::queue_timeout_ms)},
      {"max_sessions_per_uid", "sessions one uid may have open", uint_key(&Config::max_sessions_per_uid, 0, 10'000), get_uint(&Config::max_sessions_per_uid)},
      {"session_idle_timeout_ms", "a session unused this long is closed, unless its creator said otherwise",
       uint_key(&Config::session_idle_timeout_ms, 10'000, 3'600'000), get_uint(&Config::session_idle_timeout_ms)},
      {"pool_python", "warm Python VMs", uint_key(&Config::pool_python, 0, 100), get_uint(&Config::pool_python)},
      {"pool_javascript", "warm JavaScript VMs", uint_key(&Config::pool_javascript, 0, 100), get_uint(&Config::pool_javascript)},
      {"pool_raw", "warm shell VMs", uint_key(&Config::pool_raw, 0, 100), get_uint(&Config::pool_raw)},
      {"pool_layers", "warm VMs with a package layer: 'LANGUAGE:COUNT:PACKAGE PACKAGE...' sets, ';'-separated",
       [](Config& c, std::string_view v) -> Result<void> {
         auto set = string_list_key(&Config::pool_layers, [](std::string_view entry) -> Result<void> {
           if (auto r = parse_pool_layer(entry); !r) return std::move(r).error();
           return ok();
         }, ';');
         if (auto r = set(c, v); !r) return r;
         // Status lists every lane: the languages' three and these.
         if (c.pool_layers.size() > kMaxPoolLayers)
           return bad_value("at most " + std::to_string(kMaxPoolLayers) + " package sets");
         std::set<std::pair<Language, std::vector<std::string>>> seen;
         for (const auto& entry : c.pool_layers) {
           auto p = parse_pool_layer(entry);
           if (!seen.emplace(p->language, p->packages).second)
             return bad_value("the package set of '" + entry + "' is listed twice");
         }
         return ok();
       },
       get_strings(&Config::pool_layers, "; ")},
      {"pool_memory_mb", "memory of warm VMs; other sizes boot cold",
       uint_key(&Config::pool_memory_mb, 128, 2048), get_uint(&Config::pool_memory_mb)},
      {"pool_refill_concurrency", "warm VMs booting at once (0: one per host CPU, at most 16)", uint_key(&Config::pool_refill_concurrency, 0, 64), get_uint(&Config::pool_refill_concurrency)},
      {"pool_max_idle_ms", "a warm VM idle this long is replaced",
       uint_key(&Config::pool_max_idle_ms, 1000, 86'400'000), get_uint(&Config::pool_max_idle_ms)},
      {"pool_health_interval_ms", "how often idle warm VMs are pinged",
       uint_key(&Config::pool_health_interval_ms, 100, 3'600'000), get_uint(&Config::pool_health_interval_ms)},
      {"startup_timeout_ms", "bound on an interpreter's start-up, before a run's own timeout starts",
       uint_key(&Config::startup_timeout_ms, 1000, 600'000), get_uint(&Config::startup_timeout_ms)},
      {"max_connections", "control-socket connections at once",
       uint_key(&Config::max_connections, 1, 65'536), get_uint(&Config::max_connections)},
      {"max_connections_per_uid", "control-socket connections one uid may hold",
       uint_key(&Config::max_connections_per_uid, 1, 65'536), get_uint(&Config::max_connections_per_uid)},
      {"client_idle_timeout_ms", "a connection with nothing in flight is closed after this long",
       uint_key(&Config::client_idle_timeout_ms, 1000, 86'400'000), get_uint(&Config::client_idle_timeout_ms)},
      {"frame_timeout_ms", "a request frame begun must be complete within this long",
       uint_key(&Config::frame_timeout_ms, 100, 600'000), get_uint(&Config::frame_timeout_ms)},
      {"shutdown_grace_ms", "time running runs get to finish at shutdown",
       uint_key(&Config::shutdown_grace_ms, 0, 600'000), get_uint(&Config::shutdown_grace_ms)},
      {"snapshots", "restore VMs from memory snapshots instead of booting: on or off",
       [](Config& c, std::string_view v) -> Result<void> {
         if (v != "on" && v != "off") return bad_value("'" + std::string(v) + "' is not on or off");
         c.snapshots = v == "on";
         return ok();
       },
       get_bool(&Config::snapshots)},
      {"pool_restore", "restore warm-pool VMs from snapshots too: on or off",
       [](Config& c, std::string_view v) -> Result<void> {
         if (v != "on" && v != "off") return bad_value("'" + std::string(v) + "' is not on or off");
         c.pool_restore = v == "on";
         return ok();
       },
       get_bool(&Config::pool_restore)},
      {"snapshot_cache_mb", "disk the snapshot cache may use", uint_key(&Config::snapshot_cache_mb, 256, 1'000'000), get_uint(&Config::snapshot_cache_mb)},
      {"qemu_user", "user each QEMU runs as when the daemon is root", name_key(&Config::qemu_user), get_string(&Config::qemu_user)},
      {"socket_group", "group owning the control socket; its members may connect", name_key(&Config::socket_group), get_string(&Config::socket_group)},
      {"cgroup_root", "cgroup v2 mount point (empty: from /proc/self/mountinfo)", optional_path_key(&Config::cgroup_root), get_string(&Config::cgroup_root)},
      {"cgroup_base", "the daemon's cgroup subtree below cgroup_root (empty: its own cgroup)",
       optional_path_key(&Config::cgroup_base), get_string(&Config::cgroup_base)},
      {"require_cgroup_limits", "refuse to start without per-VM memory, pids and cpu cgroup limits: on or off",
       bool_key(&Config::require_cgroup_limits), get_bool(&Config::require_cgroup_limits)},
      {"vm_memory_overhead_mb", "per-VM memory.max is the guest's memory plus this",
       uint_key(&Config::vm_memory_overhead_mb, 32, 16'384), get_uint(&Config::vm_memory_overhead_mb)},
      {"vm_pids_max", "pids.max of each QEMU (its threads)", uint_key(&Config::vm_pids_max, 16, 65'536), get_uint(&Config::vm_pids_max)},
      {"vm_cpu_percent", "cpu.max of each QEMU in percent of one CPU (0: unlimited)",
       uint_key(&Config::vm_cpu_percent, 0, 100'000), get_uint(&Config::vm_cpu_percent)},
      {"dbus", "D-Bus interface: off, system, or a bus address (unix:path=...)",
       [](Config& c, std::string_view v) -> Result<void> {
         if (v != "off" && v != "system" && v.find(':') == std::string_view::npos)
           return bad_value("'" + std::string(v) + "' is not off, system or a bus address");
         c.dbus = std::string(v);
         return ok();
       },
       get_string(&Config::dbus)},
      {"extra_ca_file", "PEM file of CA certificates every guest trusts besides Debian's (empty: none)",
       optional_path_key(&Config::extra_ca_file), get_string(&Config::extra_ca_file)},
      {"network_resolver", "resolver for allowed names, ADDRESS[:PORT] (empty: the host's own)",
       [](Config& c, std::string_view v) -> Result<void> {
         std::string_view host = v.substr(0, v.rfind(':'));
         if (!v.empty() && !parse_address(host) && !parse_address(v))
           return bad_value("'" + std::string(v) + "' is not an IPv4 ADDRESS[:PORT]");
         c.network_resolver = std::string(v);
         return ok();
       },
       get_string(&Config::network_resolver)},
      {"network_allowed_ranges", "special-purpose ranges VMs may reach anyway, comma-separated CIDRs (tests: 127.0.0.0/8)",
       string_list_key(&Config::network_allowed_ranges,
                       [](std::string_view v) -> Result<void> {
                         if (!parse_cidr(v)) return bad_value("'" + std::string(v) + "' is not a CIDR range");
                         return ok();
                       }),
       get_strings(&Config::network_allowed_ranges)},
      {"default_allowed_domains", "what --network alone allows, comma-separated (empty: --network alone is refused)",
       string_list_key(&Config::default_allowed_domains,
                       [](std::string_view v) -> Result<void> {
                         if (auto r = parse_domain_rule(v); !r) return std::move(r).error();
                         return ok();
                       }),
       get_strings(&Config::default_allowed_domains)},
      {"network_max_connections", "connections one VM may have open at once",
       uint_key(&Config::network_max_connections, 1, 4096), get_uint(&Config::network_max_connections)},
      {"network_connect_timeout_ms", "a VM's connection must be requested and established within this",
       uint_key(&Config::network_connect_timeout_ms, 100, 600'000), get_uint(&Config::network_connect_timeout_ms)},
      {"network_idle_timeout_ms", "a VM's connection with no traffic this long is closed",
       uint_key(&Config::network_idle_timeout_ms, 1000, 86'400'000), get_uint(&Config::network_idle_timeout_ms)},
      {"packages_require_pinned", "packages must name exact versions (==1.2.3, @1.2.3): on or off",
       bool_key(&Config::packages_require_pinned), get_bool(&Config::packages_require_pinned)},
      {"package_allowlist", "file of allowed package names, 'python NAME' or 'javascript NAME' lines (empty: any name)",
       optional_path_key(&Config::package_allowlist), get_string(&Config::package_allowlist)},
      {"python_index_url", "the Python package index (simple API) builder VMs install from",
       url_key(&Config::python_index_url), get_string(&Config::python_index_url)},
      {"npm_registry_url", "the npm registry builder VMs install from",
       url_key(&Config::npm_registry_url), get_string(&Config::npm_registry_url)},
      {"package_download_hosts", "hosts the indexes send downloads to, which builder VMs may reach too, comma-separated",
       string_list_key(&Config::package_download_hosts,
                       [](std::string_view v) -> Result<void> {
                         if (auto r = parse_domain_rule(v); !r) return std::move(r).error();
                         return ok();
                       }),
       get_strings(&Config::package_download_hosts)},
      {"apt_sources", "Debian archives for 'apt:' packages: 'URL SUITE COMPONENT...' entries, ';'-separated",
       [](Config& c, std::string_view v) -> Result<void> {
         if (auto r = string_list_key(&Config::apt_sources, check_apt_source, ';')(c, v); !r) return r;
         if (c.apt_sources.size() > kMaxAptSources)
           return bad_value("at most " + std::to_string(kMaxAptSources) + " archives");
         return ok();
       },
       get_strings(&Config::apt_sources, "; ")},
      {"apt_keyring_file", "OpenPGP keyring the apt_sources archives are signed with (empty: the guest's Debian keyring)",
       optional_path_key(&Config::apt_keyring_file), get_string(&Config::apt_keyring_file)},
      {"package_builder_memory_mb", "guest memory of a package builder VM",
       uint_key(&Config::package_builder_memory_mb, 256, 16384), get_uint(&Config::package_builder_memory_mb)},
      {"package_source_builds", "let pip build packages from source when no wheel exists: on or off",
       bool_key(&Config::package_source_builds), get_bool(&Config::package_source_builds)},
      {"npm_install_scripts", "run npm packages' install scripts: on or off",
       bool_key(&Config::npm_install_scripts), get_bool(&Config::npm_install_scripts)},
      {"package_build_timeout_ms", "a package layer build is stopped after this long",
       uint_key(&Config::package_build_timeout_ms, 10'000, 3'600'000), get_uint(&Config::package_build_timeout_ms)},
      {"layer_cache_mb", "disk the package layer cache may use",
       uint_key(&Config::layer_cache_mb, 64, 1'000'000), get_uint(&Config::layer_cache_mb)},
      {"cache_store_url",
       "S3-compatible object store nodes share package layers through, http(s)://HOST[:PORT]/BUCKET[/PREFIX] "
       "(empty: none)",
       [](Config& c, std::string_view v) -> Result<void> {
         if (!v.empty())
           if (auto u = parse_store_url(v); !u) return std::move(u).error();
         c.cache_store_url = std::string(v);
         return ok();
       },
       get_string(&Config::cache_store_url)},
      {"cache_store_region", "the store's region, signed into requests",
       [](Config& c, std::string_view v) -> Result<void> {
         if (v.empty() || v.size() > 32 || v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string_view::npos)
           return bad_value("'" + std::string(v) + "' is not a region name");
         c.cache_store_region = std::string(v);
         return ok();
       },
       get_string(&Config::cache_store_region)},
      {"cache_store_credentials",
       "file with aws_access_key_id and aws_secret_access_key lines; requests are signed with them (SigV4) "
       "(empty: unsigned requests)",
       optional_path_key(&Config::cache_store_credentials), get_string(&Config::cache_store_credentials)},
      {"cache_store_upload", "put the package layers this node builds into the store: on or off",
       bool_key(&Config::cache_store_upload), get_bool(&Config::cache_store_upload)},
      {"cache_store_timeout_ms", "one transfer to or from the store ends within this; a failed fetch means a local build",
       uint_key(&Config::cache_store_timeout_ms, 1000, 3'600'000), get_uint(&Config::cache_store_timeout_ms)},
      {"cache_store_max_mb", "the largest layer fetched from the store",
       uint_key(&Config::cache_store_max_mb, 1, 1'000'000), get_uint(&Config::cache_store_max_mb)},
      {"log_level", "debug, info, warning or error",
       [](Config& c, std::string_view v) -> Result<void> {
         if (v != "debug" && v != "info" && v != "warning" && v != "error")
           return bad_value("'" + std::string(v) + "' is not one of debug, info, warning, error");
         c.log_level = std::string(v);
         return ok();
       },
       get_string(&Config::log_level)},
  };
  return k;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view accel_name(Accel accel) {
  switch (accel) {
    case Accel::automatic: return "auto";
    case Accel::kvm: return "kvm";
    case Accel::tcg: return "tcg";
  }
  return "auto";
}

Result<void> config_set(Config& config, std::string_view key, std::string_view value, std::string_view origin) {
  for (const auto& k : keys()) {
    if (k.name != key) continue;
    if (auto r = k.set(config, value); !r)
      return Error::make(ErrorCode::invalid_argument,
                         std::string(origin) + ": " + std::string(key) + ": " + r.error().message);
    return ok();
  }
  return Error::make(ErrorCode::invalid_argument, std::string(origin) + ": unknown key '" + std::string(key) + "'");
}

Result<void> config_parse(Config& config, std::string_view text, std::string_view path) {
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    auto line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty() || line.front() == '#') continue;
    auto origin = std::string(path) + ":" + std::to_string(line_no);
    auto eq = line.find('=');
    if (eq == std::string_view::npos)
      return Error::make(ErrorCode::invalid_argument, origin + ": expected 'key = value'");
    if (auto r = config_set(config, trim(line.substr(0, eq)), trim(line.substr(eq + 1)), origin); !r) return r;
  }
  return ok();
}

Result<void> config_apply_env(Config& config, char** envp) {
  constexpr std::string_view kPrefix = "SANDBOXD_";
  for (char** e = envp; e && *e; ++e) {
    std::string_view entry(*e);
    if (!entry.starts_with(kPrefix)) continue;
    auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    std::string name(entry.substr(0, eq));
    std::string key(entry.substr(kPrefix.size(), eq - kPrefix.size()));
    for (auto& ch : key) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    // SANDBOXD_IMAGE_CACHE belongs to the image build, not the daemon.
    if (key == "image_cache") continue;
    if (auto r = config_set(config, key, entry.substr(eq + 1), name); !r) return r;
  }
  return ok();
}

std::string config_sample() {
  Config defaults;
  std::string out =
      "# sandboxd configuration: 'key = value' per line, '#' starts a comment.\n"
      "# SANDBOXD_<KEY> environment variables override this file, --key value\n"
      "# flags override both. Each key is shown commented out with its default.\n";
  for (const auto& k : keys())
    out += "\n# " + std::string(k.help) + "\n#" + std::string(k.name) + " = " + k.get(defaults) + "\n";
  return out;
}

std::vector<std::pair<std::string, std::string>> config_keys() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& k : keys()) out.emplace_back(std::string(k.name), std::string(k.help));
  return out;
}

}  // namespace sandbox::daemon
