// Length-prefixed framing: 4-byte big-endian payload length, then payload.
// The one framed-stream reader used on both channels, by the daemon, the
// agent, libsandbox and the tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sandbox/result.h>

#include "common/protocol.h"

namespace sandbox {

inline constexpr size_t kFrameHeaderBytes = 4;

// Header + payload, ready to write.
std::string frame(std::string_view payload);
inline std::string frame_message(const proto::Message& m) { return frame(proto::encode(m)); }

// Accumulates bytes from a stream and yields whole payloads.
class FrameDecoder {
 public:
  // What an oversize frame does to the stream: `fail` makes it unusable
  // (a client that sends one is closed); `skip` drops the frame's bytes as
  // they arrive and carries on (the agent, which must stay reachable).
  enum class Oversize { fail, skip };
  explicit FrameDecoder(size_t max_payload, Oversize mode = Oversize::fail) : max_payload_(max_payload), mode_(mode) {}

  void feed(std::string_view bytes);
  // The next complete payload, nullopt when none is complete yet, or an
  // error for a header that announces more than the limit (once per such
  // frame; with Oversize::fail every later call fails too).
  std::optional<Result<std::string>> next();
  // Bytes held; whether they include an incomplete frame (for deadlines).
  size_t buffered() const { return buf_.size() - pos_; }
  bool mid_frame() const { return buffered() > 0 || skipping_ > 0; }

 private:
  size_t max_payload_;
  Oversize mode_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t skipping_ = 0;  // bytes of an oversize frame still to drop
  bool failed_ = false;
};

// Frames decoded into messages. A frame that does not decode is an error
// for that frame only; the stream stays in step.
class MessageReader {
 public:
  explicit MessageReader(size_t max_payload, FrameDecoder::Oversize mode = FrameDecoder::Oversize::fail)
      : frames_(max_payload, mode) {}
  void feed(std::string_view bytes) { frames_.feed(bytes); }
  std::optional<Result<proto::Message>> next();
  size_t buffered() const { return frames_.buffered(); }
  bool mid_frame() const { return frames_.mid_frame(); }

 private:
  FrameDecoder frames_;
};

}  // namespace sandbox
