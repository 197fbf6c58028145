#include "common/packages.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <sandbox/limits.h>

namespace sandbox {
namespace {

// PyPI and npm both cap a name at 214 bytes.
constexpr size_t kMaxPackageNameBytes = 214;
// Python extras in one entry: real packages have a handful.
constexpr size_t kMaxExtras = 8;
// Clauses in one Python specifier (">=1,<2,!=1.5"): a range needs two or three.
constexpr size_t kMaxClauses = 4;
// An allowlist file: the top packages of two ecosystems fit many times over.
constexpr size_t kMaxAllowlistBytes = 4 << 20;
constexpr size_t kMaxAllowlistNames = 100'000;

Error refuse(std::string_view text, std::string_view why) {
  std::string shown(text.substr(0, 80));
  for (char& c : shown)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return Error::make(ErrorCode::package_not_allowed, "package '" + shown + "': " + std::string(why));
}

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// PEP 508 names: letters and digits at both ends, ".-_" inside.
bool python_name_ok(std::string_view n) {
  if (n.empty() || n.size() > kMaxPackageNameBytes) return false;
  if (!is_alnum(n.front()) || !is_alnum(n.back())) return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return is_alnum(c) || c == '.' || c == '-' || c == '_'; });
}

// PEP 440 versions as they appear in a pin: digits, letters, ".", "!", "+".
// "*" only in a range ("==1.*" is not a pin).
bool python_version_ok(std::string_view v, bool wildcard) {
  if (v.empty() || v.size() > 64 || !is_alnum(v.front())) return false;
  return std::all_of(v.begin(), v.end(),
                     [&](char c) { return is_alnum(c) || c == '.' || c == '!' || c == '+' || (wildcard && c == '*'); });
}

// npm names: lower case, "-._~" inside, never starting with "." or "_";
// a scope is "@scope/".
bool npm_part_ok(std::string_view n) {
  if (n.empty() || n.front() == '.' || n.front() == '_' || n.front() == '-') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
  });
}

bool npm_name_ok(std::string_view n) {
  if (n.empty() || n.size() > kMaxPackageNameBytes) return false;
  if (n.front() != '@') return npm_part_ok(n);
  auto slash = n.find('/');
  if (slash == std::string_view::npos) return false;
  return npm_part_ok(n.substr(1, slash - 1)) && npm_part_ok(n.substr(slash + 1));
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// An exact semver: MAJOR.MINOR.PATCH, then optional -prerelease and +build.
bool npm_exact_ok(std::string_view v) {
  if (v.size() > 64) return false;
  auto core_end = v.find_first_of("-+");
  auto core = v.substr(0, core_end);
  int parts = 0;
  size_t start = 0;
  while (true) {
    auto dot = core.find('.', start);
    if (!all_digits(core.substr(start, dot - start))) return false;
    ++parts;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (parts != 3) return false;
  if (core_end == std::string_view::npos) return true;
  auto rest = v.substr(core_end + 1);
  return !rest.empty() && std::all_of(rest.begin(), rest.end(), [](char c) {
    return is_alnum(c) || c == '.' || c == '-' || c == '+';
  });
}

// A range or tag the operator may allow instead of a pin: "^1.2.0",
// "~1.2", ">=1.0.0<2", "1.x", "latest". No white space, "|", ":" or "/",
// so no alias ("npm:x"), URL, path or git reference.
bool npm_range_ok(std::string_view v) {
  if (v.empty() || v.size() > 64 || v.front() == '-') return false;
  return std::all_of(v.begin(), v.end(), [](char c) {
    return is_alnum(c) || c == '.' || c == '-' || c == '+' || c == '^' || c == '~' || c == '<' || c == '>' ||
           c == '=' || c == '*';
  });
}

// Debian policy 5.6.1: lower case letters, digits, "+-." and at least two
// characters, starting with a letter or digit.
bool apt_name_ok(std::string_view n) {
  if (n.size() < 2 || n.size() > kMaxPackageNameBytes) return false;
  if (!((n.front() >= 'a' && n.front() <= 'z') || (n.front() >= '0' && n.front() <= '9'))) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
  });
}

// Debian policy 5.6.12: [epoch:]upstream[-revision], starting with a digit.
bool apt_version_ok(std::string_view v) {
  if (v.empty() || v.size() > 64 || !(v.front() >= '0' && v.front() <= '9')) return false;
  return std::all_of(v.begin(), v.end(),
                     [](char c) { return is_alnum(c) || c == '.' || c == '+' || c == '~' || c == '-' || c == ':'; });
}

Result<PackageSpec> parse_apt(std::string_view text, const PackagePolicy& policy) {
  auto body = text.substr(kAptPrefix.size());
  auto eq = body.find('=');
  auto name = body.substr(0, eq);
  if (!apt_name_ok(name))
    return refuse(text, "not a Debian package name (lower case letters, digits and '+-.', at least two characters)");
  PackageSpec spec;
  spec.apt = true;
  spec.name = "apt:" + std::string(name);
  if (eq == std::string_view::npos) {
    if (policy.require_pinned) return refuse(text, "not pinned: name an exact version, as 'apt:name=1.2-3'");
    spec.canonical = spec.name;
    return spec;
  }
  auto version = body.substr(eq + 1);
  if (!apt_version_ok(version)) return refuse(text, "not a Debian version: '" + std::string(version.substr(0, 64)) + "'");
  spec.pinned = true;
  spec.version = std::string(version);
  spec.canonical = spec.name + "=" + spec.version;
  return spec;
}

Result<PackageSpec> parse_python(std::string_view text, const PackagePolicy& policy) {
  PackageSpec spec;
  size_t i = 0;
  while (i < text.size() && (is_alnum(text[i]) || text[i] == '.' || text[i] == '-' || text[i] == '_')) ++i;
  auto name = text.substr(0, i);
  if (!python_name_ok(name)) return refuse(text, "not a package name (letters, digits and '.-_', starting and ending with a letter or digit)");
  spec.name = normalize_python_name(name);
  if (i < text.size() && text[i] == '[') {
    auto close = text.find(']', i);
    if (close == std::string_view::npos) return refuse(text, "unterminated extras");
    std::vector<std::string> extras;
    auto list = text.substr(i + 1, close - i - 1);
    size_t start = 0;
    while (true) {
      auto comma = list.find(',', start);
      auto extra = list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      if (!python_name_ok(extra)) return refuse(text, "an extra is not a name");
      extras.push_back(normalize_python_name(extra));
      if (extras.size() > kMaxExtras) return refuse(text, "more than " + std::to_string(kMaxExtras) + " extras");
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    std::sort(extras.begin(), extras.end());
    extras.erase(std::unique(extras.begin(), extras.end()), extras.end());
    spec.extras = "[";
    for (size_t k = 0; k < extras.size(); ++k) spec.extras += (k ? "," : "") + extras[k];
    spec.extras += "]";
    i = close + 1;
  }
  auto rest = text.substr(i);
  if (rest.empty()) {
    if (policy.require_pinned) return refuse(text, "not pinned: name an exact version, as 'name==1.2.3'");
    spec.canonical = spec.name + spec.extras;
    return spec;
  }
  // Clauses: OP VERSION, comma-separated.
  std::vector<std::string> clauses;
  size_t start = 0;
  while (true) {
    auto comma = rest.find(',', start);
    auto clause = rest.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    static constexpr std::string_view kOps[] = {"===", "==", "!=", "<=", ">=", "~=", "<", ">"};
    std::string_view op;
    for (auto o : kOps)
      if (clause.starts_with(o)) {
        op = o;
        break;
      }
    if (op.empty()) return refuse(text, "expected a version specifier ('==1.2.3') after the name");
    if (op == "===") return refuse(text, "arbitrary equality ('===') is not accepted");
    auto version = clause.substr(op.size());
    bool pin = op == "==" && version.find('*') == std::string_view::npos;
    if (!python_version_ok(version, op == "==" || op == "!="))
      return refuse(text, "not a version: '" + std::string(version.substr(0, 64)) + "'");
    clauses.push_back(std::string(op) + std::string(version));
    if (clauses.size() > kMaxClauses) return refuse(text, "more than " + std::to_string(kMaxClauses) + " version clauses");
    spec.pinned = spec.pinned || pin;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (policy.require_pinned && (!spec.pinned || clauses.size() != 1))
    return refuse(text, "not pinned: name an exact version, as 'name==1.2.3'");
  std::sort(clauses.begin(), clauses.end());
  for (size_t k = 0; k < clauses.size(); ++k) spec.version += (k ? "," : "") + clauses[k];
  spec.canonical = spec.name + spec.extras + spec.version;
  return spec;
}

Result<PackageSpec> parse_javascript(std::string_view text, const PackagePolicy& policy) {
  PackageSpec spec;
  // The version separator is the first '@' after a scope's leading one.
  auto at = text.find('@', text.starts_with('@') ? 1 : 0);
  auto name = text.substr(0, at);
  if (!npm_name_ok(name))
    return refuse(text, "not an npm package name (lower case letters, digits and '-._~', optionally '@scope/')");
  spec.name = std::string(name);
  if (at == std::string_view::npos) {
    if (policy.require_pinned) return refuse(text, "not pinned: name an exact version, as 'name@1.2.3'");
    spec.canonical = spec.name;
    return spec;
  }
  auto version = text.substr(at + 1);
  spec.pinned = npm_exact_ok(version);
  if (!spec.pinned) {
    if (policy.require_pinned) return refuse(text, "not pinned: name an exact version, as 'name@1.2.3'");
    if (!npm_range_ok(version)) return refuse(text, "not a version or range: '" + std::string(version.substr(0, 64)) + "'");
  }
  spec.version = std::string(version);
  spec.canonical = spec.name + "@" + spec.version;
  return spec;
}

}  // namespace

std::string normalize_python_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    if (c == '-' || c == '_' || c == '.') {
      if (out.empty() || out.back() != '-') out += '-';
    } else {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
  }
  return out;
}

Result<PackageSpec> parse_package(Language language, std::string_view text, const PackagePolicy& policy) {
  if (text.empty()) return refuse(text, "empty");
  if (text.size() > limits::kMaxPackageSpecBytes)
    return refuse(text, "longer than " + std::to_string(limits::kMaxPackageSpecBytes) + " bytes");
  if (text.front() == '-') return refuse(text, "installer options are not accepted");
  if (is_apt_package(text)) {
    auto spec = parse_apt(text, policy);
    if (spec && policy.apt_allowlist && !policy.apt_allowlist->count(spec->name.substr(kAptPrefix.size())))
      return refuse(text, "'" + spec->name + "' is not on this host's package allowlist");
    return spec;
  }
  // Said plainly for the usual ways to leave the index, before the grammar
  // gives its generic answer.
  if (text.find("://") != std::string_view::npos || text.find(':') != std::string_view::npos)
    return refuse(text, "URLs and other sources are not accepted: only names from the configured index");
  if (text.find('/') != std::string_view::npos && !(language == Language::javascript && text.starts_with('@')))
    return refuse(text, "paths are not accepted: only names from the configured index");
  for (char c : text)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == ';' || c == '|' || c == '&' || c == '$' ||
        c == '`' || c == '\\' || c == '"' || c == '\'' || c == '(' || c == ')')
      return refuse(text, "white space, control characters, environment markers and shell syntax are not accepted");
  auto spec = language == Language::python       ? parse_python(text, policy)
              : language == Language::javascript ? parse_javascript(text, policy)
                                                 : Result<PackageSpec>(refuse(text, "raw runs take only Debian packages ('apt:NAME=VERSION')"));
  if (!spec) return spec;
  const auto& allow = language == Language::python ? policy.python_allowlist : policy.javascript_allowlist;
  if (allow && !allow->count(spec->name)) return refuse(text, "'" + spec->name + "' is not on this host's package allowlist");
  return spec;
}

Result<std::vector<PackageSpec>> parse_packages(Language language, const std::vector<std::string>& packages,
                                                const PackagePolicy& policy) {
  if (packages.size() > policy.max_packages)
    return Error::make(ErrorCode::invalid_argument, std::to_string(packages.size()) + " packages; the limit is " +
                                                        std::to_string(policy.max_packages));
  std::vector<PackageSpec> out;
  for (const auto& p : packages) {
    auto spec = parse_package(language, p, policy);
    if (!spec) return std::move(spec).error();
    for (const auto& o : out)
      if (o.name == spec->name) return refuse(p, "'" + spec->name + "' is named twice");
    out.push_back(std::move(*spec));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::vector<std::string> canonical_packages(const std::vector<PackageSpec>& specs) {
  std::vector<std::string> out;
  for (const auto& s : specs) out.push_back(s.canonical);
  return out;
}

Result<PackagePolicy> parse_package_allowlist(std::string_view text, PackagePolicy policy) {
  if (text.size() > kMaxAllowlistBytes)
    return Error::make(ErrorCode::invalid_argument, "package allowlist is over " + std::to_string(kMaxAllowlistBytes) + " bytes");
  std::set<std::string> py, js, apt;
  size_t line_no = 0;
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    ++line_no;
    if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    std::istringstream words(line);
    std::string lang, name, extra;
    if (!(words >> lang)) continue;
    auto bad = [&](std::string why) {
      return Error::make(ErrorCode::invalid_argument, "package allowlist line " + std::to_string(line_no) + ": " + why);
    };
    if (!(words >> name) || (words >> extra)) return bad("expected 'python NAME', 'javascript NAME' or 'apt NAME'");
    if (lang == "python") {
      if (!python_name_ok(name)) return bad("'" + name + "' is not a Python package name");
      py.insert(normalize_python_name(name));
    } else if (lang == "javascript") {
      if (!npm_name_ok(name)) return bad("'" + name + "' is not an npm package name");
      js.insert(name);
    } else if (lang == "apt") {
      if (!apt_name_ok(name)) return bad("'" + name + "' is not a Debian package name");
      apt.insert(name);
    } else {
      return bad("unknown language '" + lang + "'");
    }
    if (py.size() + js.size() + apt.size() > kMaxAllowlistNames) return bad("more than " + std::to_string(kMaxAllowlistNames) + " names");
  }
  policy.python_allowlist = std::move(py);
  policy.javascript_allowlist = std::move(js);
  policy.apt_allowlist = std::move(apt);
  return policy;
}

Result<PackagePolicy> load_package_allowlist(const std::string& path, PackagePolicy policy) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::sys("open", path);
  std::string text(kMaxAllowlistBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  auto r = parse_package_allowlist(text, std::move(policy));
  if (!r) return std::move(r).error().context(path);
  return r;
}

}  // namespace sandbox
