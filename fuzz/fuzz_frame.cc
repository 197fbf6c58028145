// FrameDecoder fed arbitrary bytes in pieces whose sizes come from the input
// (FuzzedDataProvider takes them from its end, the stream from its start).
// The payloads it yields must be exactly those a plain reading of the whole
// stream finds, and each is handed to proto::decode.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/framing.h"
#include "common/limits.h"
#include "common/protocol.h"
#include "fuzz/require.h"

using sandbox::fuzz::require;

namespace {

// Pieces up to this size: a few bytes at a time up to many frames at once.
constexpr size_t kMaxPieceBytes = 1 << 16;

uint32_t read_be32(std::string_view b) {
  auto u = [&](size_t i) { return uint32_t{static_cast<uint8_t>(b[i])}; };
  return (u(0) << 24) | (u(1) << 16) | (u(2) << 8) | u(3);
}

// The frames of a stream read in one go: the complete ones before the end
// or before a header over the limit.
struct Reference {
  std::vector<std::string_view> payloads;
  bool oversize = false;  // a whole header announced more than the limit
};

Reference split(std::string_view stream, size_t max_payload) {
  Reference r;
  while (stream.size() >= sandbox::kFrameHeaderBytes) {
    uint32_t n = read_be32(stream);
    if (n > max_payload) {
      r.oversize = true;
      break;
    }
    if (stream.size() - sandbox::kFrameHeaderBytes < n) break;
    r.payloads.push_back(stream.substr(sandbox::kFrameHeaderBytes, n));
    stream.remove_prefix(sandbox::kFrameHeaderBytes + n);
  }
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  size_t max_payload = 0;
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: max_payload = sandbox::limits::kMaxAgentFrameBytes; break;
    case 1: max_payload = sandbox::limits::kMaxClientFrameBytes; break;
    default: max_payload = in.ConsumeIntegralInRange<size_t>(0, 4096); break;
  }

  sandbox::FrameDecoder decoder(max_payload);
  std::string stream;  // every byte offered, in order
  std::vector<std::string> yielded;
  bool failed = false;
  while (in.remaining_bytes() > 0 && !failed) {
    size_t n = in.ConsumeIntegralInRange<size_t>(1, kMaxPieceBytes);
    std::string piece = in.ConsumeBytesAsString(n);
    stream += piece;
    failed = !decoder.feed(piece).ok();
    std::string payload;
    while (decoder.next(&payload)) {
      require(payload.size() <= max_payload, "no payload exceeds the limit");
      (void)sandbox::proto::decode(payload);
      yielded.push_back(std::move(payload));
    }
  }

  Reference expected = split(stream, max_payload);
  require(yielded.size() == expected.payloads.size(), "the decoder yields every complete frame");
  for (size_t i = 0; i < yielded.size(); ++i) require(yielded[i] == expected.payloads[i], "payloads arrive intact");
  // next() only stops at an oversize header; the feed after it fails.
  if (!expected.oversize) require(!failed, "only an oversize header fails the stream");
  if (expected.oversize) require(!decoder.feed("x").ok(), "an oversize header fails the stream for good");
  return 0;
}
