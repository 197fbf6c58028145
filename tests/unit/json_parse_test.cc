#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "common/json_parse.h"

using namespace sandbox;
using Type = JsonValue::Type;

namespace {

JsonValue parse_ok(std::string_view text, const JsonLimits& limits = {}) {
  auto v = parse_json(text, limits);
  INFO("text: ", text);
  if (!v.ok()) FAIL(v.error().describe());
  return std::move(*v);
}

// The text of a refusal, or "" when the text was accepted.
std::string refusal(std::string_view text, const JsonLimits& limits = {}) {
  auto v = parse_json(text, limits);
  if (v.ok()) return "";
  CHECK(v.error().code == ErrorCode::invalid_argument);
  return v.error().message;
}

std::string nested_arrays(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

}  // namespace

TEST_CASE("every type of value parses, with white space around it") {
  CHECK(parse_ok("null").is(Type::null));
  CHECK(parse_ok("true").boolean() == true);
  CHECK(parse_ok("false").boolean() == false);
  CHECK(parse_ok("42").integer() == 42);
  CHECK(parse_ok("\"text\"").string() == "text");
  CHECK(parse_ok("[]").is(Type::array));
  CHECK(parse_ok("{}").is(Type::object));
  CHECK(parse_ok(" \t\r\n 7 \n").integer() == 7);

  auto v = parse_ok(R"({"a": [1, "two", null, true, {"b": false}], "c": {}, "d": -0.5e3})");
  REQUIRE(v.is(Type::object));
  REQUIRE(v.members().size() == 3);
  CHECK(v.members()[0].first == "a");
  CHECK(v.members()[1].first == "c");
  CHECK(v.members()[2].first == "d");
  const auto& a = v.get("a")->items();
  REQUIRE(a.size() == 5);
  CHECK(a[0].integer() == 1);
  CHECK(a[1].string() == "two");
  CHECK(a[2].is(Type::null));
  CHECK(a[3].boolean() == true);
  CHECK(a[4].get("b")->boolean() == false);
  CHECK(v.get("c")->members().empty());
  CHECK(v.get("d")->is(Type::number));
}

TEST_CASE("QMP's own lines parse") {
  auto greeting = parse_ok(
      R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})");
  CHECK(greeting.get("QMP")->get("version")->get("qemu")->get("major")->integer() == 7);
  auto migrate = parse_ok(R"({"return": {"status": "completed", "ram": {"mbps": 1234.5, "total": 268435456}}})");
  CHECK(migrate.get("return")->get("status")->string() == "completed");
  CHECK(migrate.get("return")->get("ram")->get("total")->integer() == 268435456);
  auto error = parse_ok(R"({"error": {"class": "GenericError", "desc": "Permission denied"}})");
  CHECK(error.get("error")->get("desc")->string() == "Permission denied");
  auto event = parse_ok(R"({"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 5}})");
  CHECK(event.get("event")->string() == "STOP");
  CHECK_FALSE(event.get("return"));
}

TEST_CASE("escapes decode to their bytes, \\u escapes to UTF-8") {
  CHECK(parse_ok(R"("\"\\\/\b\f\n\r\t")").string() == "\"\\/\b\f\n\r\t");
  CHECK(parse_ok(R"("\u0041\u00e9\u20AC")").string() == "A\xc3\xa9\xe2\x82\xac");
  CHECK(parse_ok(R"("\u0000")").string() == std::string_view("\0", 1));
  CHECK(parse_ok(R"("\u07ff\u0800\uffff")").string() == "\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf");
  // A surrogate pair is one character of four bytes.
  CHECK(parse_ok(R"("\ud83d\ude00")").string() == "\xf0\x9f\x98\x80");
  CHECK(parse_ok(R"("\uD834\uDD1E")").string() == "\xf0\x9d\x84\x9e");
  CHECK(parse_ok(R"("\udbff\udfff")").string() == "\xf4\x8f\xbf\xbf");
  // Raw UTF-8 and DEL pass through.
  CHECK(parse_ok("\"caf\xc3\xa9 \xf0\x9f\x98\x80\x7f\"").string() == "caf\xc3\xa9 \xf0\x9f\x98\x80\x7f");
}

TEST_CASE("numbers keep their text; integer() reads only whole int64 values") {
  CHECK(parse_ok("0").integer() == 0);
  CHECK(parse_ok("-0").integer() == 0);
  CHECK(parse_ok("-12").integer() == -12);
  CHECK(parse_ok("9223372036854775807").integer() == INT64_MAX);
  CHECK(parse_ok("-9223372036854775808").integer() == INT64_MIN);
  for (auto text : {"9223372036854775808", "-9223372036854775809", "1.5", "1e3", "1E+3", "2.5e-7", "-0.0"}) {
    auto v = parse_ok(text);
    CHECK(v.is(Type::number));
    CHECK_FALSE(v.integer());
  }
}

TEST_CASE("malformed text is refused, saying where") {
  for (auto text : {
           "",                // nothing
           "   ",             // only white space
           "[1, 2,]",         // trailing commas
           "{\"a\": 1,}",     //
           "[1 2]",           // missing comma
           "{\"a\" 1}",       // missing colon
           "{a: 1}",          // unquoted key
           "{1: 1}",          //
           "['a']",           // single quotes
           "\"abc",           // unterminated string
           "[\"abc]",         //
           "\"abc\\",         // unterminated escape
           "[1, 2",           // unterminated array
           "{\"a\": 1",       // unterminated object
           "\"a\nb\"",        // control characters in a string
           "\"a\tb\"",        //
           "\"\x01\"",        //
           "\"\\x41\"",       // unknown escape
           "\"\\u12\"",       // short \u escape
           "\"\\u12g4\"",     //
           "\"\\ud800\"",     // unpaired surrogates
           "\"\\ud800x\"",    //
           "\"\\ud800\\u0041\"",
           "\"\\udc00\"",     //
           "\"\\udc00\\ud800\"",
           "x{}",             // leading garbage
           "\xef\xbb\xbf{}",  // a byte order mark
           "{} x",            // trailing characters
           "{}}",             //
           "1 2",             //
           "tru", "nul", "falsey", "True", "NULL",
           "-", "+1", ".5", "1.", "1e", "1e+", "01", "-01", "00", "0x10", "NaN", "Infinity", "-Infinity",
       }) {
    INFO("text: ", text);
    CHECK(refusal(text).starts_with("malformed JSON: "));
  }
  CHECK(refusal(std::string_view("{}\0", 3)) == "malformed JSON: trailing characters");
  CHECK(refusal("[1,]").find("at offset 3") != std::string::npos);
}

TEST_CASE("nesting is bounded by max_depth, counting the outermost value as 0") {
  JsonLimits limits;
  limits.max_depth = 2;
  CHECK(parse_ok("[[1]]", limits).items()[0].items()[0].integer() == 1);
  CHECK(parse_ok("[[[]]]", limits).is(Type::array));
  CHECK(parse_ok(R"({"a": {"b": 1}})", limits).is(Type::object));
  CHECK(refusal("[[[1]]]", limits).find("nested too deeply") != std::string::npos);
  CHECK(refusal(R"({"a": {"b": {}}})", limits) == "");
  CHECK(refusal(R"({"a": {"b": {"c": 1}}})", limits).find("nested too deeply") != std::string::npos);

  CHECK(parse_ok(nested_arrays(33)).is(Type::array));  // the default: 32 below the outermost
  CHECK(refusal(nested_arrays(34)).find("nested too deeply") != std::string::npos);
  // Far deeper than the stack would take unbounded: refused, not a crash.
  CHECK(refusal(std::string(100000, '[')).find("nested too deeply") != std::string::npos);
}

TEST_CASE("values are bounded by max_nodes, keys not counted") {
  JsonLimits limits;
  limits.max_nodes = 3;
  CHECK(parse_ok("[1, 2]", limits).items().size() == 2);
  CHECK(parse_ok(R"({"a": 1, "b": [], "c": 3})", JsonLimits{1 << 20, 32, 4}).members().size() == 3);
  CHECK(refusal("[1, 2, 3]", limits).find("too many values") != std::string::npos);
  CHECK(refusal(R"({"a": 1, "b": 2, "c": 3})", limits).find("too many values") != std::string::npos);
  CHECK(refusal("[[], [], []]", limits).find("too many values") != std::string::npos);
  std::string many = "[0";
  for (int i = 0; i < 70000; ++i) many += ",0";
  many += "]";
  CHECK(refusal(many).find("too many values") != std::string::npos);
}

TEST_CASE("the text is bounded by max_bytes before it is read") {
  JsonLimits limits;
  limits.max_bytes = 8;
  CHECK(parse_ok("[1, 2]  ", limits).items().size() == 2);
  CHECK(refusal("[1, 2]   ", limits) == "malformed JSON: longer than 8 bytes");
  CHECK(refusal("\"123456789\"", limits) == "malformed JSON: longer than 8 bytes");
}

TEST_CASE("accessors answer for their own type only") {
  auto v = parse_ok(R"({"s": "5", "n": 5, "b": true, "z": null, "a": [1], "o": {"k": 1}, "s": "second"})");
  const JsonValue* s = v.get("s");
  REQUIRE(s);
  CHECK(s->string() == "5");  // the first of duplicate keys
  CHECK_FALSE(s->integer());
  CHECK_FALSE(s->boolean());
  CHECK_FALSE(s->get("k"));

  const JsonValue* n = v.get("n");
  CHECK(n->integer() == 5);
  CHECK_FALSE(n->string());
  CHECK_FALSE(n->boolean());

  const JsonValue* b = v.get("b");
  CHECK(b->boolean() == true);
  CHECK_FALSE(b->integer());
  CHECK_FALSE(b->string());

  const JsonValue* z = v.get("z");
  CHECK(z->is(Type::null));
  CHECK_FALSE(z->boolean());
  CHECK_FALSE(z->string());
  CHECK_FALSE(z->integer());

  CHECK_FALSE(v.get("a")->get("0"));
  CHECK(v.get("a")->items()[0].integer() == 1);
  CHECK(v.get("o")->get("k")->integer() == 1);
  CHECK_FALSE(v.get("missing"));
  CHECK_FALSE(v.get(""));
  CHECK_FALSE(v.string());
  CHECK_FALSE(v.integer());
  CHECK_FALSE(v.boolean());
}
