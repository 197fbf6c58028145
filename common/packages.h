// Package requests (SPEC F14): the text a caller writes in `packages`
// ("requests==2.31.0", "left-pad@1.3.0"), checked and put in canonical form
// before anything starts. The text reaches an installer's command line in
// the builder VM, so the grammar is a strict subset of pip's and npm's:
// a name, at most a few extras, and a version or a version range — never
// a URL, a path, an option, white space or shell syntax.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/limits.h>
#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox {

// What the operator allows (daemon config); libsandbox checks the syntax
// with `require_pinned` off, the daemon with the operator's policy.
struct PackagePolicy {
  // "==1.2.3" for Python, an exact version for npm.
  bool require_pinned = true;
  size_t max_packages = limits::kMaxPackages;
  // Canonical names allowed per language; absent: any name.
  std::optional<std::set<std::string>> python_allowlist;
  std::optional<std::set<std::string>> javascript_allowlist;
  // Debian package names ("apt:NAME" entries), as the archive spells them.
  std::optional<std::set<std::string>> apt_allowlist;
};

// "apt:NAME[=VERSION]": a Debian package from the operator's archive,
// for any language (raw runs take only these).
inline constexpr std::string_view kAptPrefix = "apt:";
inline bool is_apt_package(std::string_view text) { return text.starts_with(kAptPrefix); }

struct PackageSpec {
  std::string name;       // canonical: Python's normalized name, npm's name as written (lower case), "apt:NAME"
  bool apt = false;       // a Debian package
  std::string extras;     // Python "[a,b]" sorted and normalized, or ""
  std::string version;    // after the name: "==1.2" / ">=1,<2" (Python), "1.3.0" / "^1.3" (npm), "1.6-2" (apt)
  bool pinned = false;
  std::string canonical;  // what the installer is given and the cache key holds
};

// One entry. Errors are package_not_allowed and name the entry.
Result<PackageSpec> parse_package(Language language, std::string_view text, const PackagePolicy& policy);
// The whole list: at most policy.max_packages, no name twice, raw refused;
// returns the canonical specs sorted by name.
Result<std::vector<PackageSpec>> parse_packages(Language language, const std::vector<std::string>& packages,
                                                const PackagePolicy& policy);
// The canonical request strings, sorted: what a layer key is made of.
std::vector<std::string> canonical_packages(const std::vector<PackageSpec>& specs);

// PEP 503 normalization: lower case, runs of "-", "_", "." become one "-".
std::string normalize_python_name(std::string_view name);

// An allowlist data file: one name per line per ecosystem, as
// "python NAME", "javascript NAME" or "apt NAME"; '#' starts a comment.
// Bounded.
Result<PackagePolicy> load_package_allowlist(const std::string& path, PackagePolicy policy);
Result<PackagePolicy> parse_package_allowlist(std::string_view text, PackagePolicy policy);

}  // namespace sandbox
