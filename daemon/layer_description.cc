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
  size_t start = 0;
  for (bool first = true; start < text.size(); first = false) {
    auto nl = text.find('\n', start);
    if (nl == std::string_view::npos) return corrupt("description not ended by a newline");
    auto line = text.substr(start, nl - start);
    start = nl + 1;
    if (first) {
      if (line != kMetaMagic) return corrupt("not a layer description");
      continue;
    }
    auto sp = line.find(' ');
    if (sp == std::string_view::npos) return corrupt("a line without a value");
    auto tag = line.substr(0, sp), value = line.substr(sp + 1);
    if (value.empty() || value.size() > limits::kMaxNameBytes || !printable_line(value))
      return corrupt("an unreadable '" + std::string(tag.substr(0, 16)) + "' line");
    if (tag == "sha256") {
      if (value.size() != 64 || value.find_first_not_of("0123456789abcdef") != std::string_view::npos)
        return corrupt("a malformed image hash");
      d.sha256 = std::string(value);
    } else if (tag == "language") {
      auto l = parse_language(value);
      if (!l) return corrupt("unknown language");
      d.info.language = *l;
    } else if (tag == "bytes") {
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), d.info.bytes);
      if (ec != std::errc() || p != value.data() + value.size()) return corrupt("a malformed size");
      has_bytes = true;
    } else if (tag == "package") {
      if (d.info.packages.size() >= limits::kMaxPackages) return corrupt("too many packages");
      d.info.packages.emplace_back(value);
    } else if (tag == "lock") {
      if (d.info.lock.size() >= proto::kMaxLockEntries) return corrupt("too many lock entries");
      d.info.lock.emplace_back(value);
    } else {
      return corrupt("unexpected line '" + std::string(tag.substr(0, 16)) + "'");
    }
  }
  if (d.sha256.empty()) return corrupt("no image hash");
  if (!has_bytes) return corrupt("no size");
  return d;
}

}  // namespace sandbox::daemon
