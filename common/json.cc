// JSON printing of the described structs in protocol.h: one generic walker
// over their field tables.
#include <sandbox/json.h>

#include <cstdio>

#include "common/protocol.h"

namespace sandbox {
namespace {

using schema::Described;
using schema::kEmbed;
using schema::kText;
using schema::NamedEnum;

// Length of the valid UTF-8 sequence starting at s[i], or 0.
size_t utf8_len(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  uint32_t cp = n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (b(i + k) & 0x3F);
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};

template <class T>
void object(std::string& out, const T& v);

template <unsigned Flags, class M>
void value(std::string& out, std::string_view key, const M& m) {
  if constexpr (std::is_same_v<M, std::string>) {
    out += json_string(m);
    // Exact bytes when data is not text.
    if constexpr ((Flags & kText) == 0)
      if (!is_valid_utf8(m)) out += ",\"" + std::string(key) + "_base64\":" + json_string(base64(m));
  } else if constexpr (std::is_same_v<M, bool>) {
    out += m ? "true" : "false";
  } else if constexpr (std::is_integral_v<M>) {
    out += std::to_string(m);
  } else if constexpr (std::is_same_v<M, std::chrono::milliseconds>) {
    out += std::to_string(m.count());
  } else if constexpr (NamedEnum<M>) {
    out += json_string(schema::EnumNames<M>::name(m));
  } else if constexpr (std::is_same_v<M, EnvList>) {
    out += '{';
    for (size_t i = 0; i < m.size(); ++i) out += (i ? "," : "") + json_string(m[i].first) + ":" + json_string(m[i].second);
    out += '}';
  } else if constexpr (Described<M>) {
    object(out, m);
  } else if constexpr (is_vector<M>::value) {
    out += '[';
    for (size_t i = 0; i < m.size(); ++i) {
      if (i) out += ',';
      value<Flags>(out, key, m[i]);
    }
    out += ']';
  } else {
    static_assert(sizeof(M) == 0, "a field type the JSON printer does not know");
  }
}

// The fields of T as `"key":value` pairs, without braces.
template <class T>
void members(std::string& out, const T& v, bool& first) {
  schema::for_each_field<T>([&](const auto& f) {
    using F = std::decay_t<decltype(f)>;
    if constexpr ((F::flags & kEmbed) != 0) {
      members(out, v.*f.member, first);
    } else {
      if (!first) out += ',';
      first = false;
      out += json_string(f.key) + ":";
      value<F::flags>(out, f.key, v.*f.member);
    }
  });
}

template <class T>
void object(std::string& out, const T& v) {
  out += '{';
  bool first = true;
  members(out, v, first);
  out += '}';
}

template <class T>
std::string json_of(const T& v) {
  std::string out;
  object(out, v);
  return out;
}

}  // namespace

std::string to_json(const RunResult& v) { return json_of(v); }
std::string to_json(const DaemonStatus& v) { return json_of(v); }
std::string to_json(const PoolInfo& v) { return json_of(v); }
std::string to_json(const SnapshotInfo& v) { return json_of(v); }
std::string to_json(const SessionInfo& v) { return json_of(v); }
std::string to_json(const FileEntry& v) { return json_of(v); }
std::string to_json(const FileListing& v) { return json_of(v); }
std::string to_json(const ImagesInfo& v) { return json_of(v); }
std::string to_json(const ExposedPort& v) { return json_of(v); }
std::string to_json(const NetworkStats& v) { return json_of(v); }
std::string to_json(const LayerInfo& v) { return json_of(v); }
std::string to_json(const LayerUse& v) { return json_of(v); }

std::string to_json(const Error& e) {
  return "{\"code\":" + json_string(error_code_name(e.code)) + ",\"message\":" + json_string(e.message) +
         ",\"retryable\":" + (error_code_retryable(e.code) ? "true" : "false") + "}";
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_len(s, i);
    if (n == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    char c = s[i++];
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned char>(c));
          out += esc;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

std::string base64(std::string_view s) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[k])); };
  for (; i + 2 < s.size(); i += 3) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    for (int k = 18; k >= 0; k -= 6) out.push_back(kAlphabet[(v >> k) & 63]);
  }
  if (i + 1 == s.size()) {
    uint32_t v = at(i) << 16;
    out += {kAlphabet[(v >> 18) & 63], kAlphabet[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == s.size()) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8);
    out += {kAlphabet[(v >> 18) & 63], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
  }
  return out;
}

}  // namespace sandbox
