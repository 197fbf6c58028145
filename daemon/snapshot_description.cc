#include "daemon/snapshot_description.h"

#include <charconv>

#include "daemon/layer_description.h"

namespace sandbox::daemon {
namespace {

constexpr std::string_view kMagic = "sandboxd-snapshot 1";

bool is_hex64(std::string_view s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Printable, no space: keys, fingerprints and layer identities are one word.
bool is_token(std::string_view s) {
  if (s.empty() || s.size() > kMaxSnapshotTokenBytes) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return true;
}

bool parse_u64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string_view encoding_name(SnapshotEncoding e) { return e == SnapshotEncoding::zstd ? "zstd" : "raw"; }

std::string format_file(std::string_view name, const SnapshotFile& f) {
  return "file " + std::string(name) + " " + std::to_string(f.bytes) + " " + f.sha256 + " " +
         std::string(encoding_name(f.encoding)) + " " + std::to_string(f.stored_bytes) + "\n";
}

// "NAME BYTES SHA256 ENCODING STORED" after "file ".
bool parse_file(std::string_view rest, std::string_view* name, SnapshotFile* f) {
  std::string_view parts[5];
  for (size_t i = 0; i < 5; ++i) {
    auto sp = rest.find(' ');
    if ((sp == std::string_view::npos) != (i == 4)) return false;
    parts[i] = rest.substr(0, sp);
    if (sp != std::string_view::npos) rest.remove_prefix(sp + 1);
  }
  *name = parts[0];
  if (!parse_u64(parts[1], &f->bytes) || !is_hex64(parts[2]) || !parse_u64(parts[4], &f->stored_bytes)) return false;
  f->sha256 = std::string(parts[2]);
  if (parts[3] == "raw")
    f->encoding = SnapshotEncoding::raw;
  else if (parts[3] == "zstd")
    f->encoding = SnapshotEncoding::zstd;
  else
    return false;
  // Stored raw, the object is the file itself.
  return f->encoding != SnapshotEncoding::raw || f->stored_bytes == f->bytes;
}

}  // namespace

std::string format_snapshot_description(const SnapshotDescription& d) {
  std::string s = std::string(kMagic) + "\nkey " + d.key + "\nfingerprint " + d.fingerprint + "\nlanguage " +
                  std::string(language_name(d.language)) + "\nmemory_mb " + std::to_string(d.memory_mb) + "\n";
  if (!d.layer.empty()) s += "layer " + d.layer + "\n";
  return s + format_file("state", d.state) + format_file("ram", d.ram);
}

Result<SnapshotDescription> parse_snapshot_description(std::string_view text) {
  auto corrupt = [](std::string why) {
    return Error::make(ErrorCode::image_corrupt, "snapshot description: " + std::move(why));
  };
  if (text.size() > kMaxSnapshotDescriptionBytes) return corrupt("too large");
  SnapshotDescription d;
  // Each line once, in any order after the first.
  bool seen_key = false, seen_fp = false, seen_lang = false, seen_mem = false, seen_layer = false;
  bool seen_state = false, seen_ram = false;
  auto once = [](bool& seen) {
    bool again = seen;
    seen = true;
    return !again;
  };
  auto why = read_tagged_lines(text, kMagic, [&](std::string_view tag, std::string_view value) -> std::string {
    if (tag == "key") {
      if (!once(seen_key) || !is_token(value)) return "a bad 'key' line";
      d.key = std::string(value);
    } else if (tag == "fingerprint") {
      if (!once(seen_fp) || !is_hex64(value)) return "a bad 'fingerprint' line";
      d.fingerprint = std::string(value);
    } else if (tag == "language") {
      auto l = parse_language(value);
      if (!once(seen_lang) || !l) return "a bad 'language' line";
      d.language = *l;
    } else if (tag == "memory_mb") {
      uint64_t mb = 0;
      if (!once(seen_mem) || !parse_u64(value, &mb) || mb == 0 || mb > limits::kMaxMemoryMb)
        return "a bad 'memory_mb' line";
      d.memory_mb = static_cast<uint32_t>(mb);
    } else if (tag == "layer") {
      if (!once(seen_layer) || !is_token(value)) return "a bad 'layer' line";
      d.layer = std::string(value);
    } else if (tag == "file") {
      std::string_view name;
      SnapshotFile f;
      if (!parse_file(value, &name, &f)) return "a bad 'file' line";
      if (name == "state" && once(seen_state))
        d.state = std::move(f);
      else if (name == "ram" && once(seen_ram))
        d.ram = std::move(f);
      else
        return "an unexpected or repeated file";
    } else {
      return "unexpected line '" + std::string(tag.substr(0, 16)) + "'";
    }
    return "";
  });
  if (!why.empty()) return corrupt(why);
  if (!seen_key || !seen_fp || !seen_lang || !seen_mem || !seen_state || !seen_ram) return corrupt("a line is missing");
  // The RAM file holds the whole guest memory, whatever it compresses to.
  if (d.ram.bytes != uint64_t{d.memory_mb} << 20) return corrupt("the RAM file is not the memory's size");
  return d;
}

}  // namespace sandbox::daemon
