// FrameDecoder and MessageReader fed arbitrary bytes in pieces whose sizes
// come from the input (FuzzedDataProvider takes them from its end, the
// stream from its start), in both oversize modes. What they yield must be
// exactly what a plain reading of the whole stream finds:
//   fail: every complete frame up to the first oversize header, then an
//         error on that header and on every later call;
//   skip: every frame that fits, in order, and one error in its place for
//         each oversize one, its bytes dropped whether or not they arrived.
// The message reader must yield a message exactly where the decoder yields
// a payload that proto::decode accepts.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/limits.h>

#include "common/framing.h"
#include "common/protocol.h"
#include "fuzz/require.h"

using sandbox::FrameDecoder;
using sandbox::fuzz::require;

namespace {

// Pieces up to this size: a few bytes at a time up to many frames at once.
constexpr size_t kMaxPieceBytes = 1 << 16;

// One thing next() yields: a payload, or nullopt for an oversize frame.
using Event = std::optional<std::string>;

uint32_t read_be32(std::string_view b) {
  auto u = [&](size_t i) { return uint32_t{static_cast<uint8_t>(b[i])}; };
  return (u(0) << 24) | (u(1) << 16) | (u(2) << 8) | u(3);
}

// The stream read in one go, as the decoder should see it.
struct Reference {
  std::vector<Event> events;
  bool failed = false;     // fail mode: an oversize header killed the stream
  size_t rest = 0;         // bytes of an incomplete header or frame at the end
  uint64_t unskipped = 0;  // skip mode: bytes of an oversize frame not yet arrived
};

Reference read_whole(std::string_view stream, size_t max_payload, FrameDecoder::Oversize mode) {
  Reference r;
  while (stream.size() >= sandbox::kFrameHeaderBytes) {
    uint32_t n = read_be32(stream);
    if (n > max_payload) {
      r.events.emplace_back(std::nullopt);
      if (mode == FrameDecoder::Oversize::fail) {
        r.failed = true;
        return r;
      }
      stream.remove_prefix(sandbox::kFrameHeaderBytes);
      size_t present = std::min<size_t>(n, stream.size());
      stream.remove_prefix(present);
      r.unskipped = n - present;
      continue;
    }
    if (stream.size() - sandbox::kFrameHeaderBytes < n) break;
    r.events.emplace_back(std::string(stream.substr(sandbox::kFrameHeaderBytes, n)));
    stream.remove_prefix(sandbox::kFrameHeaderBytes + n);
  }
  r.rest = stream.size();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  auto mode = in.ConsumeBool() ? FrameDecoder::Oversize::skip : FrameDecoder::Oversize::fail;
  size_t max_payload = in.ConsumeBool() ? sandbox::limits::kMaxFrameBytes : in.ConsumeIntegralInRange<size_t>(0, 4096);

  FrameDecoder decoder(max_payload, mode);
  sandbox::MessageReader reader(max_payload, mode);
  std::string stream;  // every byte offered, in order
  std::vector<Event> yielded;
  bool failed = false;
  while (in.remaining_bytes() > 0) {
    size_t n = in.ConsumeIntegralInRange<size_t>(1, kMaxPieceBytes);
    std::string piece = in.ConsumeBytesAsString(n);
    stream += piece;
    decoder.feed(piece);
    reader.feed(piece);
    // A failed stream fails on every call; one is enough here.
    while (!failed) {
      auto next = decoder.next();
      auto message = reader.next();
      require(next.has_value() == message.has_value(), "the reader yields exactly when its frames do");
      if (!next) break;
      if (!*next) {
        require(!next->error().message.empty(), "an oversize frame says why");
        require(!*message, "the reader fails an oversize frame too");
        yielded.emplace_back(std::nullopt);
        failed = mode == FrameDecoder::Oversize::fail;
        continue;
      }
      const std::string& payload = **next;
      require(payload.size() <= max_payload, "no payload exceeds the limit");
      require(message->ok() == sandbox::proto::decode(payload).ok(),
              "the reader decodes exactly the payloads that decode");
      yielded.emplace_back(payload);
    }
    // What is held waits for at most one frame that fits.
    if (!failed) require(decoder.buffered() < sandbox::kFrameHeaderBytes + max_payload, "the buffer is bounded");
  }

  Reference expected = read_whole(stream, max_payload, mode);
  require(yielded.size() == expected.events.size(), "every frame that fits comes out, each oversize one fails");
  for (size_t i = 0; i < yielded.size(); ++i)
    require(yielded[i] == expected.events[i], "payloads arrive intact, in order, errors in their place");
  require(failed == expected.failed, "only an oversize header fails the stream");
  if (failed) {
    decoder.feed(std::string_view("\0\0\0\0", 4));
    auto again = decoder.next();
    require(again && !*again, "a failed stream stays failed");
    auto again_message = reader.next();
    require(again_message && !*again_message, "a failed reader stays failed");
  } else {
    require(decoder.buffered() == expected.rest, "the decoder holds exactly the incomplete tail");
    require(decoder.mid_frame() == (expected.rest > 0 || expected.unskipped > 0),
            "mid_frame says whether a frame is under way");
  }
  return 0;
}
