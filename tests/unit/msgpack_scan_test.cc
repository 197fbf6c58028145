#include <doctest/doctest.h>
#include <msgpack.hpp>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "common/msgpack_scan.h"
#include "common/protocol.h"

using namespace sandbox;

namespace {

constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();
constexpr MsgpackScanLimits kWide{kNoLimit, kMaxScanDepth, kNoLimit};
// What a control frame may hold (the fuzz target uses the same).
constexpr MsgpackScanLimits kRealistic{20000, 8, 4096};

std::string bytes(std::initializer_list<int> v) {
  std::string out;
  for (int b : v) out.push_back(static_cast<char>(b));
  return out;
}

std::string error_of(std::string_view input, const MsgpackScanLimits& limits = kWide) {
  auto r = scan_msgpack(input, limits);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::invalid_argument);
  CHECK(r.error().message.rfind("malformed message: ", 0) == 0);
  return r.error().message;
}

// msgpack allocates a declared container before reading it: no count may
// exceed the input's size, which keeps valid input valid.
bool msgpack_accepts(std::string_view input) {
  msgpack::unpack_limit limit(input.size(), input.size(), input.size(), input.size(), input.size(), kMaxScanDepth);
  try {
    size_t off = 0;
    auto h = msgpack::unpack(input.data(), input.size(), off, nullptr, nullptr, limit);
    return off == input.size();
  } catch (const std::exception&) {
    return false;
  }
}

struct Sample {
  const char* format;
  std::string bytes;
  size_t objects;
  size_t depth;
};

// One object of every msgpack format, written out byte by byte.
std::vector<Sample> every_format() {
  return {
      {"positive fixint", bytes({0x05}), 1, 0},
      {"negative fixint", bytes({0xe0}), 1, 0},
      {"nil", bytes({0xc0}), 1, 0},
      {"false", bytes({0xc2}), 1, 0},
      {"true", bytes({0xc3}), 1, 0},
      {"uint 8", bytes({0xcc, 0xff}), 1, 0},
      {"uint 16", bytes({0xcd, 1, 2}), 1, 0},
      {"uint 32", bytes({0xce, 1, 2, 3, 4}), 1, 0},
      {"uint 64", bytes({0xcf, 1, 2, 3, 4, 5, 6, 7, 8}), 1, 0},
      {"int 8", bytes({0xd0, 0x80}), 1, 0},
      {"int 16", bytes({0xd1, 0xff, 0}), 1, 0},
      {"int 32", bytes({0xd2, 0xff, 0, 0, 0}), 1, 0},
      {"int 64", bytes({0xd3, 0xff, 0, 0, 0, 0, 0, 0, 0}), 1, 0},
      {"float 32", bytes({0xca, 0x3f, 0x80, 0, 0}), 1, 0},
      {"float 64", bytes({0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}), 1, 0},
      {"fixstr", bytes({0xa3, 'a', 'b', 'c'}), 1, 0},
      {"empty fixstr", bytes({0xa0}), 1, 0},
      {"str 8", bytes({0xd9, 3, 'a', 'b', 'c'}), 1, 0},
      {"str 16", bytes({0xda, 0, 3, 'a', 'b', 'c'}), 1, 0},
      {"str 32", bytes({0xdb, 0, 0, 0, 3, 'a', 'b', 'c'}), 1, 0},
      {"bin 8", bytes({0xc4, 2, 0, 0xff}), 1, 0},
      {"bin 16", bytes({0xc5, 0, 2, 0, 0xff}), 1, 0},
      {"bin 32", bytes({0xc6, 0, 0, 0, 2, 0, 0xff}), 1, 0},
      {"fixext 1", bytes({0xd4, 7, 1}), 1, 0},
      {"fixext 2", bytes({0xd5, 7, 1, 2}), 1, 0},
      {"fixext 4", bytes({0xd6, 0xff, 1, 2, 3, 4}), 1, 0},
      {"fixext 8", bytes({0xd7, 7, 1, 2, 3, 4, 5, 6, 7, 8}), 1, 0},
      {"fixext 16", bytes({0xd8, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}), 1, 0},
      {"ext 8", bytes({0xc7, 2, 7, 1, 2}), 1, 0},
      {"ext 16", bytes({0xc8, 0, 2, 7, 1, 2}), 1, 0},
      {"ext 32", bytes({0xc9, 0, 0, 0, 2, 7, 1, 2}), 1, 0},
      {"fixarray", bytes({0x92, 1, 2}), 3, 1},
      {"empty fixarray", bytes({0x90}), 1, 1},
      {"array 16", bytes({0xdc, 0, 2, 1, 2}), 3, 1},
      {"array 32", bytes({0xdd, 0, 0, 0, 2, 1, 2}), 3, 1},
      {"fixmap", bytes({0x81, 0xa1, 'k', 1}), 3, 1},
      {"empty fixmap", bytes({0x80}), 1, 1},
      {"map 16", bytes({0xde, 0, 1, 0xa1, 'k', 1}), 3, 1},
      {"map 32", bytes({0xdf, 0, 0, 0, 1, 0xa1, 'k', 1}), 3, 1},
      // {"a": [1, [2]]}
      {"nested", bytes({0x81, 0xa1, 'a', 0x92, 0x01, 0x91, 0x02}), 6, 3},
      // [[], {}, nil]: empty containers still nest
      {"empty nested", bytes({0x93, 0x90, 0x80, 0xc0}), 4, 2},
  };
}

// A map16 holding every sample under its own key.
Sample map_of_every_format() {
  auto samples = every_format();
  Sample all{"map of every format", bytes({0xde, 0, static_cast<int>(samples.size())}), 1, 0};
  for (size_t i = 0; i < samples.size(); ++i) {
    all.bytes += bytes({0xa2, 'k', static_cast<int>('A' + i)});
    all.bytes += samples[i].bytes;
    all.objects += 1 + samples[i].objects;
    all.depth = std::max(all.depth, 1 + samples[i].depth);
  }
  return all;
}

std::string nested_arrays(size_t levels) { return std::string(levels, '\x91') + '\x01'; }

}  // namespace

TEST_CASE("every msgpack format is walked with the right counts") {
  auto samples = every_format();
  samples.push_back(map_of_every_format());
  for (const auto& s : samples) {
    INFO(s.format);
    REQUIRE(msgpack_accepts(s.bytes));
    auto r = scan_msgpack(s.bytes, kRealistic);
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    CHECK(r->objects == s.objects);
    CHECK(r->max_depth_seen == s.depth);
  }
}

TEST_CASE("real protocol messages are within the realistic limits") {
  proto::Run run{7, {Language::python, "print(1)", {{"A", "1"}, {"B", "2"}}, std::chrono::milliseconds(1000), 256}};
  auto r = scan_msgpack(proto::encode(run), kRealistic);
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  // The map, 11 keys, 11 values, and the env map's 2 keys and 2 values.
  CHECK(r->objects == 1 + 22 + 4);
  CHECK(r->max_depth_seen == 2);

  proto::FileList list{3, {{{"a", false, 1}, {"b", true, 0}}, false}};
  auto l = scan_msgpack(proto::encode(list), kRealistic);
  REQUIRE_MESSAGE(l.ok(), l.error().message);
  CHECK(l->max_depth_seen == 3);
}

TEST_CASE("every truncation of a message is refused") {
  auto all = map_of_every_format();
  for (size_t n = 0; n < all.bytes.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    error_of(std::string_view(all.bytes).substr(0, n));
  }
  CHECK(error_of("") == "malformed message: object at offset 0 needs 1 more bytes, 0 left");
  CHECK(error_of(bytes({0xdb, 0, 0})) == "malformed message: object at offset 0 needs 4 more bytes, 2 left");
}

TEST_CASE("bytes after the message are refused") {
  auto all = map_of_every_format();
  CHECK(error_of(all.bytes + '\0') == "malformed message: 1 trailing bytes after the message");
  CHECK(error_of(all.bytes + all.bytes).find("trailing bytes") != std::string::npos);
  CHECK(error_of(bytes({0xc0, 0xc0})).find("1 trailing bytes") != std::string::npos);
}

TEST_CASE("nesting is bounded") {
  MsgpackScanLimits limits{kNoLimit, 8, kNoLimit};
  auto at_limit = scan_msgpack(nested_arrays(8), limits);
  REQUIRE(at_limit.ok());
  CHECK(at_limit->max_depth_seen == 8);
  CHECK(error_of(nested_arrays(9), limits) == "malformed message: nested deeper than 8 containers");
  // An empty container is a level too.
  CHECK(error_of(std::string(8, '\x91') + '\x80', limits).find("nested deeper") != std::string::npos);

  // The scanner's own stack caps whatever the caller asks for.
  MsgpackScanLimits deep{kNoLimit, 1000, kNoLimit};
  CHECK(scan_msgpack(nested_arrays(kMaxScanDepth), deep).ok());
  CHECK(error_of(nested_arrays(kMaxScanDepth + 1), deep).find("nested deeper than 64") != std::string::npos);

  MsgpackScanLimits flat{kNoLimit, 0, kNoLimit};
  CHECK(scan_msgpack(bytes({0x01}), flat).ok());
  CHECK(error_of(bytes({0x90}), flat).find("nested deeper than 0") != std::string::npos);
}

TEST_CASE("entries per container are bounded") {
  MsgpackScanLimits limits{kNoLimit, 8, 3};
  CHECK(scan_msgpack(bytes({0x93, 1, 2, 3}), limits).ok());
  CHECK(error_of(bytes({0x94, 1, 2, 3, 4}), limits) ==
        "malformed message: array at offset 0 has 4 entries, over the limit of 3");
  // A map's entries are its pairs.
  CHECK(scan_msgpack(bytes({0x83, 1, 1, 2, 2, 3, 3}), limits).ok());
  CHECK(error_of(bytes({0x84, 1, 1, 2, 2, 3, 3, 4, 4}), limits).find("map at offset 0 has 4 entries") !=
        std::string::npos);
}

TEST_CASE("the total number of objects is bounded") {
  // [nil, nil, nil]: the array and its three elements.
  auto three = bytes({0x93, 0xc0, 0xc0, 0xc0});
  CHECK(scan_msgpack(three, {4, 8, kNoLimit}).ok());
  CHECK(error_of(three, {3, 8, kNoLimit}) == "malformed message: more than 3 objects");
  // Map keys count as much as values.
  CHECK(error_of(bytes({0x81, 0xc0, 0xc0}), {2, 8, kNoLimit}) == "malformed message: more than 2 objects");
  CHECK(error_of(bytes({0x01}), {0, 8, kNoLimit}) == "malformed message: more than 0 objects");
}

TEST_CASE("many small containers are refused quickly, before any allocation") {
  auto started = std::chrono::steady_clock::now();

  // A flat array of 100k nils: refused on its header alone.
  std::string flat = bytes({0xdd, 0, 0x01, 0x86, 0xa0}) + std::string(100000, '\xc0');
  CHECK(error_of(flat, kRealistic).find("has 100000 entries") != std::string::npos);
  CHECK(error_of(flat, {20000, 8, kNoLimit}) == "malformed message: more than 20000 objects");

  // 1 MiB of nested one-element arrays.
  CHECK(error_of(std::string(1 << 20, '\x91'), kRealistic).find("nested deeper than 8") != std::string::npos);

  // The frame that made msgpack allocate ~28 bytes of objects per byte of
  // input: an unknown key holding arrays of small arrays, each within every
  // per-container limit. Found by counting, part way through.
  std::string junk = bytes({0x82, 0xa4, 't', 'y', 'p', 'e', 0xa3, 'r', 'u', 'n', 0xa4, 'j', 'u', 'n', 'k'});
  junk += bytes({0xdc, 0x10, 0x00});  // 4096 entries
  for (int i = 0; i < 4096; ++i) junk += bytes({0xdc, 0x01, 0x00}) + std::string(256, '\x90');
  CHECK(junk.size() > 1 << 20);
  CHECK(error_of(junk, kRealistic) == "malformed message: more than 20000 objects");

  auto elapsed = std::chrono::steady_clock::now() - started;
  CHECK(elapsed < std::chrono::seconds(1));
}

TEST_CASE("lengths near 4 GiB are checked against the bytes left") {
  CHECK(error_of(bytes({0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c'})) ==
        "malformed message: object at offset 0 needs 4294967295 more bytes, 3 left");
  CHECK(error_of(bytes({0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2})).find("needs 4294967295 more bytes") !=
        std::string::npos);
  // An ext's type byte comes on top of its length.
  CHECK(error_of(bytes({0xc9, 0xff, 0xff, 0xff, 0xff, 7, 1})).find("needs 4294967296 more bytes") !=
        std::string::npos);
  CHECK(error_of(bytes({0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0})) ==
        "malformed message: array at offset 0 declares 4294967295 entries in the 2 bytes left");
  CHECK(error_of(bytes({0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0})).find("map at offset 0 declares") !=
        std::string::npos);
  // Inside a container, at a later offset.
  CHECK(error_of(bytes({0x91, 0xdb, 0xff, 0xff, 0xff, 0xff})) ==
        "malformed message: object at offset 1 needs 4294967295 more bytes, 0 left");
}

TEST_CASE("0xc1 is never a format") {
  CHECK(error_of(bytes({0xc1})) == "malformed message: byte 0xc1 at offset 0 is not a msgpack format");
  CHECK(error_of(bytes({0x92, 0x01, 0xc1})).find("at offset 2") != std::string::npos);
}

TEST_CASE("the scanner agrees with msgpack on random short inputs") {
  // Bytes biased towards format markers so that containers and lengths occur.
  std::mt19937 rng(1234);
  const std::string alphabet = bytes({0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0x8f, 0x90, 0x91, 0x92, 0x9f, 0xa0, 0xa1,
                                      0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb,
                                      0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb, 0xdc,
                                      0xdd, 0xde, 0xdf, 0xe0, 0xff});
  for (int i = 0; i < 50000; ++i) {
    std::string input;
    size_t n = rng() % 12;
    for (size_t j = 0; j < n; ++j) input.push_back(alphabet[rng() % alphabet.size()]);
    INFO("input #" << i);
    CHECK(scan_msgpack(input, kWide).ok() == msgpack_accepts(input));
  }
}
