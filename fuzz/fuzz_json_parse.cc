// parse_json on arbitrary text, the way QEMU's QMP lines reach it. Beyond
// no crash, leak or hang:
//   - it accepts exactly RFC 8259 JSON (less unpaired \u surrogates; other
//     bytes of strings pass through as they are) within its limits, checked
//     against a recognizer here and under three sets of limits;
//   - what it accepts, written out again here (once as is, once with every
//     non-ASCII character as \u escapes), parses back to the same values;
//   - the accessors agree with the text.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json_parse.h"
#include "fuzz/require.h"

using sandbox::JsonLimits;
using sandbox::JsonValue;
using sandbox::fuzz::require;

namespace {

// The daemon's QMP client, the defaults, and limits small enough to hit.
constexpr JsonLimits kQmp{64 << 10, 16, 4096};
constexpr JsonLimits kDefault{};
constexpr JsonLimits kTight{256, 3, 16};
// Deeper than any limit above: the recognizer stops there (its stack is the
// process's own).
constexpr size_t kRecognizerDepth = 64;

// What the recognizer finds in a text.
struct Shape {
  bool valid = false;
  size_t nodes = 0;
  size_t depth = 0;  // of the deepest value, the outermost being 0
  std::vector<std::string_view> numbers;  // their literals, in document order
};

bool within(const Shape& s, size_t bytes, const JsonLimits& l) {
  return s.valid && bytes <= l.max_bytes && s.depth <= l.max_depth && s.nodes <= l.max_nodes;
}

// RFC 8259's grammar, written for clarity rather than speed.
class Recognizer {
 public:
  explicit Recognizer(std::string_view s) : s_(s) {}

  Shape run() {
    Shape shape;
    shape_ = &shape;
    shape.valid = value(0) && (space(), at_ == s_.size());
    return shape;
  }

 private:
  bool more() const { return at_ < s_.size(); }
  char peek() const { return s_[at_]; }
  bool eat(char c) {
    if (!more() || peek() != c) return false;
    ++at_;
    return true;
  }
  bool eat(std::string_view word) {
    if (s_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }
  void space() {
    while (more() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++at_;
  }
  bool digit() const { return more() && peek() >= '0' && peek() <= '9'; }

  bool value(size_t depth) {
    if (depth > kRecognizerDepth) return false;
    ++shape_->nodes;
    shape_->depth = std::max(shape_->depth, depth);
    space();
    if (!more()) return false;
    switch (peek()) {
      case 'n': return eat("null");
      case 't': return eat("true");
      case 'f': return eat("false");
      case '"': return string();
      case '[': {
        ++at_;
        space();
        if (eat(']')) return true;
        do {
          if (!value(depth + 1)) return false;
          space();
        } while (eat(','));
        return eat(']');
      }
      case '{': {
        ++at_;
        space();
        if (eat('}')) return true;
        do {
          space();
          if (!more() || peek() != '"' || !string()) return false;
          space();
          if (!eat(':') || !value(depth + 1)) return false;
          space();
        } while (eat(','));
        return eat('}');
      }
      default: return number();
    }
  }

  bool number() {
    size_t start = at_;
    eat('-');
    if (eat('0')) {
      // No leading zeros.
    } else if (digit() && peek() != '0') {
      while (digit()) ++at_;
    } else {
      return false;
    }
    if (eat('.')) {
      if (!digit()) return false;
      while (digit()) ++at_;
    }
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      if (!digit()) return false;
      while (digit()) ++at_;
    }
    shape_->numbers.push_back(s_.substr(start, at_ - start));
    return true;
  }

  std::optional<uint32_t> hex4() {
    if (s_.size() - at_ < 4) return std::nullopt;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = s_[at_++];
      uint32_t d = 0;
      if (h >= '0' && h <= '9') {
        d = static_cast<uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        d = static_cast<uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        d = static_cast<uint32_t>(h - 'A' + 10);
      } else {
        return std::nullopt;
      }
      v = v * 16 + d;
    }
    return v;
  }

  bool string() {
    ++at_;
    while (more()) {
      auto c = static_cast<unsigned char>(s_[at_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c != '\\') continue;
      if (!more()) return false;
      char e = s_[at_++];
      if (std::string_view("\"\\/bfnrt").find(e) != std::string_view::npos) continue;
      if (e != 'u') return false;
      auto cp = hex4();
      if (!cp) return false;
      if (*cp >= 0xDC00 && *cp <= 0xDFFF) return false;
      if (*cp >= 0xD800 && *cp <= 0xDBFF) {
        if (!eat("\\u")) return false;
        auto low = hex4();
        if (!low || *low < 0xDC00 || *low > 0xDFFF) return false;
      }
    }
    return false;
  }

  std::string_view s_;
  size_t at_ = 0;
  Shape* shape_ = nullptr;
};

// The value of an integer literal if it fits int64, else nullopt.
std::optional<int64_t> integer_of(std::string_view literal) {
  bool negative = !literal.empty() && literal[0] == '-';
  if (negative) literal.remove_prefix(1);
  if (literal.empty()) return std::nullopt;
  // Accumulated as a negative number: int64's range is one larger there.
  int64_t v = 0;
  for (char c : literal) {
    if (c < '0' || c > '9') return std::nullopt;
    int d = c - '0';
    if (v < (INT64_MIN + d) / 10) return std::nullopt;
    v = v * 10 - d;
  }
  if (negative) return v;
  if (v == INT64_MIN) return std::nullopt;
  return -v;
}

// The code point of a well-formed UTF-8 sequence at the start of `s` and
// its length, or nullopt (overlong forms and surrogates are not well-formed).
std::optional<std::pair<uint32_t, size_t>> utf8_at(std::string_view s) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  unsigned char c = b(0);
  uint32_t cp = 0;
  size_t n = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    cp = c & 0x1F;
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    cp = c & 0x0F;
    n = 3;
  } else if (c >= 0xF0 && c <= 0xF4) {
    cp = c & 0x07;
    n = 4;
  } else {
    return std::nullopt;
  }
  for (size_t i = 1; i < n; ++i) {
    if (!cont(i)) return std::nullopt;
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return std::nullopt;
  return std::pair{cp, n};
}

// Writes a parsed value back as JSON text, checking its accessors on the way.
class Writer {
 public:
  Writer(const std::vector<std::string_view>& numbers, bool ascii) : numbers_(numbers), ascii_(ascii) {}

  std::string write(const JsonValue& v) {
    std::string out;
    put(v, out);
    require(next_number_ == numbers_.size(), "the parser keeps every number of the text");
    return out;
  }

 private:
  void put(const JsonValue& v, std::string& out) {
    using Type = JsonValue::Type;
    require(v.string().has_value() == v.is(Type::string), "string() answers for strings only");
    require(v.boolean().has_value() == v.is(Type::boolean), "boolean() answers for booleans only");
    if (!v.is(Type::number)) require(!v.integer(), "integer() answers for numbers only");
    if (!v.is(Type::array)) require(v.items().empty(), "only arrays have items");
    if (!v.is(Type::object)) require(v.members().empty() && !v.get(""), "only objects have members");
    switch (v.type()) {
      case Type::null: out += "null"; return;
      case Type::boolean: out += *v.boolean() ? "true" : "false"; return;
      case Type::number: {
        require(next_number_ < numbers_.size(), "the parser invents no number");
        std::string_view literal = numbers_[next_number_++];
        require(v.integer() == integer_of(literal), "integer() is the literal's value when it is an int64");
        out += literal;
        return;
      }
      case Type::string: put_string(*v.string(), out); return;
      case Type::array:
        out += '[';
        for (size_t i = 0; i < v.items().size(); ++i) {
          if (i > 0) out += ',';
          put(v.items()[i], out);
        }
        out += ']';
        return;
      case Type::object: {
        out += '{';
        const auto& members = v.members();
        for (size_t i = 0; i < members.size(); ++i) {
          if (i > 0) out += ',';
          const JsonValue* found = v.get(members[i].first);
          size_t first = 0;
          while (members[first].first != members[i].first) ++first;
          require(found == &members[first].second, "get() finds a key's first member");
          put_string(members[i].first, out);
          out += ':';
          put(members[i].second, out);
        }
        out += '}';
        return;
      }
    }
    require(false, "a value has one of the six types");
  }

  static void put_u(uint32_t unit, std::string& out) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(unit >> shift) & 0xF];
  }

  void put_string(std::string_view s, std::string& out) const {
    out += '"';
    for (size_t i = 0; i < s.size();) {
      auto c = static_cast<unsigned char>(s[i]);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c < 0x20) {
        put_u(c, out);
      } else if (c >= 0x80 && ascii_) {
        if (auto seq = utf8_at(s.substr(i))) {
          auto [cp, n] = *seq;
          if (cp >= 0x10000) {
            put_u(0xD800 + ((cp - 0x10000) >> 10), out);
            put_u(0xDC00 + ((cp - 0x10000) & 0x3FF), out);
          } else {
            put_u(cp, out);
          }
          i += n;
          continue;
        }
        out += static_cast<char>(c);  // not UTF-8: the bytes pass through as they are
      } else {
        out += static_cast<char>(c);
      }
      ++i;
    }
    out += '"';
  }

  const std::vector<std::string_view>& numbers_;
  bool ascii_;
  size_t next_number_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Shape shape = Recognizer(text).run();

  for (const JsonLimits* limits : {&kTight, &kDefault}) {
    auto parsed = sandbox::parse_json(text, *limits);
    require(parsed.ok() == within(shape, size, *limits), "accepted exactly when valid and within the limits");
    if (!parsed.ok()) require(!parsed.error().message.empty(), "a refusal says why");
  }
  auto parsed = sandbox::parse_json(text, kQmp);
  require(parsed.ok() == within(shape, size, kQmp), "accepted exactly when valid and within the QMP limits");
  if (!parsed.ok()) return 0;

  // Escapes make the text longer, never deeper or fuller.
  JsonLimits again_limits = kQmp;
  again_limits.max_bytes = SIZE_MAX;
  std::string plain = Writer(shape.numbers, false).write(*parsed);
  auto again = sandbox::parse_json(plain, again_limits);
  require(again.ok(), "a value written back parses");
  require(Writer(shape.numbers, false).write(*again) == plain, "a value written back parses to the same value");

  std::string ascii = Writer(shape.numbers, true).write(*parsed);
  auto unescaped = sandbox::parse_json(ascii, again_limits);
  require(unescaped.ok(), "a value written back in ASCII parses");
  require(Writer(shape.numbers, false).write(*unescaped) == plain, "\\u escapes decode to the UTF-8 they stand for");
  return 0;
}
