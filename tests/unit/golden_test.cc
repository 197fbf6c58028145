// The checked-in golden frames (python/tests/golden/, written by
// proto_golden from tests/golden/messages.h) against the C++ codec: each
// file is exactly the frame of its message, and decodes back to it. The
// Python suite checks the same files against its own codec.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/framing.h"
#include "tests/golden/messages.h"

using namespace sandbox;

namespace {

const std::string kDir = std::string(SANDBOXD_SOURCE_DIR) + "/python/tests/golden";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("golden frames: each file is its message's frame and decodes back to it") {
  for (const auto& g : golden::messages()) {
    INFO(g.name);
    std::string bytes = slurp(kDir + "/" + g.name + ".bin");
    REQUIRE_FALSE(bytes.empty());
    CHECK(bytes == frame_message(g.message));

    FrameDecoder frames(limits::kMaxFrameBytes);
    frames.feed(bytes);
    auto payload = frames.next();
    REQUIRE(payload.has_value());
    REQUIRE(payload->ok());
    CHECK(frames.buffered() == 0);
    auto decoded = proto::decode(**payload);
    REQUIRE_MESSAGE(decoded.ok(), decoded.error().message);
    CHECK(proto::type_name(*decoded) == proto::type_name(g.message));
    CHECK(proto::request_id_of(*decoded) == proto::request_id_of(g.message));
    // The encoding is a function of every field: equal re-encodings mean
    // every field decoded to its expected value.
    CHECK(proto::encode(*decoded) == proto::encode(g.message));
  }
}

TEST_CASE("golden frames: no file without its message") {
  std::set<std::string> expected;
  for (const auto& g : golden::messages()) expected.insert(g.name + ".bin");
  std::set<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator(kDir)) found.insert(e.path().filename().string());
  CHECK(found == expected);
}

TEST_CASE("golden frames: a field that differs is seen") {
  auto all = golden::messages();
  auto& run = std::get<proto::Run>(all.at(0).message);
  run.request.memory_mb += 1;
  CHECK(frame_message(run) != slurp(kDir + "/" + all.at(0).name + ".bin"));
}
