// A bounded JSON parser for text another process controls (QEMU's QMP
// replies; a confined QEMU is not trusted). Depth, node count and input
// size are bounded before anything grows with them; numbers are kept as
// text and read on demand.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>

namespace sandbox {

class JsonValue {
 public:
  enum class Type { null, boolean, number, string, array, object };

  Type type() const { return type_; }
  bool is(Type t) const { return type_ == t; }
  // The member `key` of an object, or nullptr.
  const JsonValue* get(std::string_view key) const;
  // A string's text, or nullopt for any other type.
  std::optional<std::string_view> string() const;
  std::optional<int64_t> integer() const;
  // Any number (integer, fraction or exponent), as a finite double.
  std::optional<double> number() const;
  std::optional<bool> boolean() const;
  const std::vector<JsonValue>& items() const { return items_; }
  const std::vector<std::pair<std::string, JsonValue>>& members() const { return members_; }

 private:
  friend class JsonParser;
  Type type_ = Type::null;
  std::string text_;  // string contents, or a number's literal
  bool bool_ = false;
  std::vector<JsonValue> items_;
  std::vector<std::pair<std::string, JsonValue>> members_;
};

struct JsonLimits {
  size_t max_bytes = 1 << 20;
  size_t max_depth = 32;
  size_t max_nodes = 65536;
};

// One JSON value with only white space around it.
Result<JsonValue> parse_json(std::string_view text, const JsonLimits& limits = {});

}  // namespace sandbox
