#include <sandbox/types.h>

#include <array>

namespace sandbox {
namespace {

constexpr std::array<std::string_view, 3> kLanguageNames = {"python", "javascript", "raw"};

struct Alias {
  std::string_view name;
  Language language;
};
// What people type for each language, besides the canonical names.
constexpr Alias kAliases[] = {
    {"py", Language::python},     {"python3", Language::python}, {"js", Language::javascript},
    {"node", Language::javascript}, {"sh", Language::raw},       {"bash", Language::raw},
    {"shell", Language::raw},
};

}  // namespace

std::string_view language_name(Language language) {
  auto i = static_cast<size_t>(language);
  return i < kLanguageNames.size() ? kLanguageNames[i] : "unknown";
}

std::optional<Language> parse_language(std::string_view name) {
  for (size_t i = 0; i < kLanguageNames.size(); ++i)
    if (kLanguageNames[i] == name) return static_cast<Language>(i);
  for (const auto& a : kAliases)
    if (a.name == name) return a.language;
  return std::nullopt;
}

std::string_view stream_name(Stream stream) { return stream == Stream::err ? "stderr" : "stdout"; }

}  // namespace sandbox
