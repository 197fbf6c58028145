#include "ctl/json.h"

#include "common/protocol.h"

#include <cstdio>

namespace sandbox::ctl {
namespace {

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

}  // namespace

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

std::string result_json(std::string_view source, Language lang, const Result<RunResult>& r) {
  std::string j = "{\"source\":" + json_string(source) + ",\"language\":" +
                  json_string(proto::language_name(static_cast<proto::Language>(lang)));
  if (!r) {
    const auto& e = r.error();
    j += ",\"error\":{\"code\":" + json_string(error_code_name(e.code)) + ",\"message\":" + json_string(e.message) +
         ",\"retryable\":" + (error_code_retryable(e.code) ? "true" : "false") + "}}";
    return j;
  }
  auto b = [](bool v) { return v ? std::string("true") : std::string("false"); };
  auto bytes = [&](const char* key, const std::string& data) {
    j += std::string(",\"") + key + "\":" + json_string(data);
    // Exact bytes when they are not text.
    if (!is_valid_utf8(data)) j += std::string(",\"") + key + "_base64\":" + json_string(base64(data));
  };
  j += ",\"exit_code\":" + std::to_string(r->exit_code) + ",\"signal\":" + std::to_string(r->signal) +
       ",\"timed_out\":" + b(r->timed_out);
  bytes("stdout", r->stdout_data);
  bytes("stderr", r->stderr_data);
  j += ",\"stdout_truncated\":" + b(r->stdout_truncated) + ",\"stderr_truncated\":" + b(r->stderr_truncated) +
       ",\"execution_time_ms\":" + std::to_string(r->execution_time_ms) +
       ",\"cpu_time_ms\":" + std::to_string(r->cpu_time_ms) +
       ",\"memory_peak_mb\":" + std::to_string(r->memory_peak_mb) + ",\"timing\":{\"setup_ms\":" +
       std::to_string(r->timing.setup_ms) + ",\"boot_ms\":" + std::to_string(r->timing.boot_ms) +
       ",\"execute_ms\":" + std::to_string(r->timing.execute_ms) + ",\"total_ms\":" +
       std::to_string(r->timing.total_ms) + "},\"warm_pool_hit\":" + b(r->warm_pool_hit) +
       ",\"accelerator\":" + json_string(r->accelerator) + ",\"vm_start\":" + json_string(r->vm_start) +
       ",\"state_lost\":" + b(r->state_lost) + "}";
  return j;
}

}  // namespace sandbox::ctl
