#include "daemon/layer_description.h"

#include <algorithm>
#include <charconv>

#include <sandbox/limits.h>

#include "common/protocol.h"

namespace sandbox::daemon {
namespace {

constexpr std::string_view kMetaMagic = "sandboxd-layer 1";

}  // namespace

bool printable_line(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

std::string read_tagged_lines(std::string_view text, std::string_view magic,
                              const std::function<std::string(std::string_view tag, std::string_view value)>& line) {
  size_t start = 0;
  for (bool first = true; start < text.size(); first = false) {
    auto nl = text.find('\n', start);
    if (nl == std::string_view::npos) return "not ended by a newline";
    auto l = text.substr(start, nl - start);
    start = nl + 1;
    if (first) {
      if (l != magic) return "not a description of this kind";
      continue;
    }
    auto sp = l.find(' ');
    if (sp == std::string_view::npos) return "a line without a value";
    if (auto why = line(l.substr(0, sp), l.substr(sp + 1)); !why.empty()) return why;
  }
  return start == 0 ? "empty" : "";
}

std::string format_layer_description(const LayerDescription& d) {
  std::string meta = std::string(kMetaMagic) + "\nsha256 " + d.sha256 + "\nlanguage " +
                     std::string(language_name(d.info.language)) + "\nbytes " + std::to_string(d.info.bytes) + "\n";
  for (const auto& p : d.info.packages) meta += "package " + p + "\n";
  for (const auto& l : d.info.lock) meta += "lock " + l + "\n";
  return meta;
}

Result<LayerDescription> parse_layer_description(const std::string& key, std::string_view text) {
  auto corrupt = [&](std::string why) { return Error::make(ErrorCode::image_corrupt, "layer " + key + ": " + why); };
  if (text.size() > kMaxLayerDescriptionBytes) return corrupt("description too large");
  LayerDescription d;
  d.info.key = key;
  bool has_bytes = false;
  auto why = read_tagged_lines(text, kMetaMagic, [&](std::string_view tag, std::string_view value) -> std::string {
    if (value.empty() || value.size() > limits::kMaxNameBytes || !printable_line(value))
      return "an unreadable '" + std::string(tag.substr(0, 16)) + "' line";
    if (tag == "sha256") {
      if (value.size() != 64 || value.find_first_not_of("0123456789abcdef") != std::string_view::npos)
        return "a malformed image hash";
      d.sha256 = std::string(value);
    } else if (tag == "language") {
      auto l = parse_language(value);
      if (!l) return "unknown language";
      d.info.language = *l;
    } else if (tag == "bytes") {
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), d.info.bytes);
      if (ec != std::errc() || p != value.data() + value.size()) return "a malformed size";
      has_bytes = true;
    } else if (tag == "package") {
      if (d.info.packages.size() >= limits::kMaxPackages) return "too many packages";
      d.info.packages.emplace_back(value);
    } else if (tag == "lock") {
      if (d.info.lock.size() >= proto::kMaxLockEntries) return "too many lock entries";
      d.info.lock.emplace_back(value);
    } else {
      return "unexpected line '" + std::string(tag.substr(0, 16)) + "'";
    }
    return "";
  });
  if (!why.empty()) return corrupt("description: " + why);
  if (d.sha256.empty()) return corrupt("no image hash");
  if (!has_bytes) return corrupt("no size");
  return d;
}

}  // namespace sandbox::daemon
