// A package specifier from a client (common/packages.cc): any bytes, for
// every language, pinned and relaxed. What is accepted must be safe to
// hand to an installer's command line, and its canonical form must parse
// back to itself (one request, one cache key).
#include <cstdint>
#include <string>
#include <string_view>

#include "common/packages.h"
#include "fuzz/require.h"

using namespace sandbox;
using sandbox::fuzz::require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto language : {Language::python, Language::javascript, Language::raw}) {
    for (bool pinned : {true, false}) {
      PackagePolicy policy;
      policy.require_pinned = pinned;
      auto spec = parse_package(language, text, policy);
      if (!spec) {
        require(spec.error().code == ErrorCode::package_not_allowed, "a refusal with another code");
        continue;
      }
      require(language != Language::raw || spec->apt, "a raw run accepted a package that is not Debian's");
      require(spec->apt == is_apt_package(text), "a Debian package not named 'apt:', or the reverse");
      const auto& c = spec->canonical;
      require(!c.empty() && c.front() != '-', "an accepted option");
      // A Debian package is "apt:NAME[=VERSION]": the prefix's ':' and an
      // epoch's are its only colons; the rest is apt's name and version
      // alphabet, which never starts an option.
      std::string_view rest = c;
      if (spec->apt) {
        rest.remove_prefix(kAptPrefix.size());
        require(!rest.empty() && rest.front() != '-', "an accepted Debian option");
        for (char ch : rest)
          require((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                      ch == '+' || ch == '-' || ch == '~' || ch == ':' || ch == '=',
                  "an accepted Debian package outside apt's alphabet");
      }
      for (char ch : rest)
        require(static_cast<unsigned char>(ch) > 0x20 && ch != 0x7f && (ch != ':' || spec->apt) && ch != ';' &&
                    ch != '\\' && ch != '$' && ch != '`' && ch != '|' && ch != '&' && ch != '\'' && ch != '"',
                "an accepted specifier with a separator, a source or shell syntax");
      require(!pinned || spec->pinned, "an unpinned specifier under the pinning policy");
      auto again = parse_package(language, c, policy);
      require(again.ok() && again->canonical == c, "the canonical form does not parse back to itself");
    }
  }
  return 0;
}
