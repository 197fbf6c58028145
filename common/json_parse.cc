#include "common/json_parse.h"

#include <charconv>
#include <cmath>

namespace sandbox {

class JsonParser {
 public:
  JsonParser(std::string_view text, const JsonLimits& limits) : s_(text), limits_(limits) {}

  Result<JsonValue> parse() {
    if (s_.size() > limits_.max_bytes) return fail("longer than " + std::to_string(limits_.max_bytes) + " bytes");
    JsonValue v;
    if (!value(v, 0)) return fail(error_);
    skip_space();
    if (pos_ != s_.size()) return fail("trailing characters");
    return v;
  }

 private:
  static Error fail(const std::string& what) {
    return Error::make(ErrorCode::invalid_argument, "malformed JSON: " + what);
  }
  bool error(std::string what) {
    if (error_.empty()) error_ = std::move(what) + " at offset " + std::to_string(pos_);
    return false;
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return error("bad literal");
    pos_ += word.size();
    return true;
  }

  bool value(JsonValue& out, size_t depth) {
    if (depth > limits_.max_depth) return error("nested too deeply");
    if (++nodes_ > limits_.max_nodes) return error("too many values");
    skip_space();
    if (pos_ >= s_.size()) return error("unexpected end");
    char c = s_[pos_];
    switch (c) {
      case 'n': out.type_ = JsonValue::Type::null; return literal("null");
      case 't': out.type_ = JsonValue::Type::boolean; out.bool_ = true; return literal("true");
      case 'f': out.type_ = JsonValue::Type::boolean; out.bool_ = false; return literal("false");
      case '"': out.type_ = JsonValue::Type::string; return string(out.text_);
      case '[': return array(out, depth);
      case '{': return object(out, depth);
      default: return number(out);
    }
  }

  bool number(JsonValue& out) {
    size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    auto digits = [&] {
      size_t d = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ > d;
    };
    // The integer part is "0" or starts with 1-9: RFC 8259 has no leading zeros.
    bool zero = pos_ < s_.size() && s_[pos_] == '0';
    if (!digits()) return error("bad number");
    if (zero && pos_ - start > (s_[start] == '-' ? 2u : 1u)) return error("leading zero in a number");
    if (pos_ < s_.size() && s_[pos_] == '.' && (++pos_, !digits())) return error("bad number");
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (!digits()) return error("bad number");
    }
    out.type_ = JsonValue::Type::number;
    out.text_ = std::string(s_.substr(start, pos_ - start));
    return true;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool hex4(uint32_t* out) {
    if (pos_ + 4 > s_.size()) return error("short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
      else return error("bad \\u escape");
    }
    *out = v;
    return true;
  }

  bool string(std::string& out) {
    ++pos_;  // the opening quote
    for (;;) {
      if (pos_ >= s_.size()) return error("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return error("control character in a string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) return error("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out.push_back(e); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF && s_.substr(pos_, 2) == "\\u") {
            pos_ += 2;
            uint32_t low = 0;
            if (!hex4(&low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) return error("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            return error("unpaired surrogate");
          }
          put_utf8(out, cp);
          break;
        }
        default: return error("bad escape");
      }
    }
  }

  bool array(JsonValue& out, size_t depth) {
    out.type_ = JsonValue::Type::array;
    ++pos_;
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == ']') return ++pos_, true;
    for (;;) {
      out.items_.emplace_back();
      if (!value(out.items_.back(), depth + 1)) return false;
      skip_space();
      if (pos_ >= s_.size()) return error("unterminated array");
      if (s_[pos_] == ']') return ++pos_, true;
      if (s_[pos_++] != ',') return error("expected ',' in an array");
    }
  }

  bool object(JsonValue& out, size_t depth) {
    out.type_ = JsonValue::Type::object;
    ++pos_;
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == '}') return ++pos_, true;
    for (;;) {
      skip_space();
      if (pos_ >= s_.size() || s_[pos_] != '"') return error("expected a key");
      std::string key;
      if (!string(key)) return false;
      skip_space();
      if (pos_ >= s_.size() || s_[pos_++] != ':') return error("expected ':'");
      out.members_.emplace_back(std::move(key), JsonValue{});
      if (!value(out.members_.back().second, depth + 1)) return false;
      skip_space();
      if (pos_ >= s_.size()) return error("unterminated object");
      if (s_[pos_] == '}') return ++pos_, true;
      if (s_[pos_++] != ',') return error("expected ',' in an object");
    }
  }

  std::string_view s_;
  JsonLimits limits_;
  size_t pos_ = 0;
  size_t nodes_ = 0;
  std::string error_;
};

const JsonValue* JsonValue::get(std::string_view key) const {
  for (const auto& [k, v] : members_)
    if (k == key) return &v;
  return nullptr;
}

std::optional<std::string_view> JsonValue::string() const {
  if (type_ != Type::string) return std::nullopt;
  return text_;
}

std::optional<int64_t> JsonValue::integer() const {
  if (type_ != Type::number) return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
  if (ec != std::errc() || end != text_.data() + text_.size()) return std::nullopt;
  return v;
}

std::optional<double> JsonValue::number() const {
  if (type_ != Type::number) return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(text_.data(), text_.data() + text_.size(), v);
  if (ec != std::errc() || end != text_.data() + text_.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<bool> JsonValue::boolean() const {
  if (type_ != Type::boolean) return std::nullopt;
  return bool_;
}

Result<JsonValue> parse_json(std::string_view text, const JsonLimits& limits) { return JsonParser(text, limits).parse(); }

}  // namespace sandbox
