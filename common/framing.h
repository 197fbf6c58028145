// Length-prefixed framing: 4-byte big-endian payload length, then payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/protocol.h"
#include "common/result.h"

namespace sandbox {

inline constexpr size_t kFrameHeaderBytes = 4;

// Header + payload, ready to write.
std::string frame(std::string_view payload);
inline std::string frame_message(const proto::Message& m) { return frame(proto::encode(m)); }

// Accumulates bytes from a stream and yields whole payloads. A length over
// the limit poisons the decoder: the connection must be closed, because the
// stream can no longer be resynchronised.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_payload) : max_payload_(max_payload) {}

  // Appends received bytes; fails once a header announces an oversize frame.
  Result<void> feed(std::string_view bytes);
  // Moves the next complete payload into *out; false when none is complete.
  bool next(std::string* out);
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  size_t max_payload_;
  std::string buf_;
  size_t pos_ = 0;
  bool poisoned_ = false;
};

}  // namespace sandbox
