#include "common/framing.h"

namespace sandbox {
namespace {

uint32_t read_be32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

}  // namespace

std::string frame(std::string_view payload) {
  std::string out;
  out.reserve(kFrameHeaderBytes + payload.size());
  auto n = static_cast<uint32_t>(payload.size());
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.append(payload);
  return out;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (failed_) return;
  if (skipping_ > 0) {
    auto drop = std::min<uint64_t>(skipping_, bytes.size());
    skipping_ -= drop;
    bytes.remove_prefix(drop);
  }
  // Compact before growing so a long-lived stream does not keep consumed bytes.
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
}

std::optional<Result<std::string>> FrameDecoder::next() {
  if (failed_) return Error::make(ErrorCode::invalid_argument, "stream already failed");
  if (buffered() < kFrameHeaderBytes) return std::nullopt;
  uint32_t n = read_be32(buf_.data() + pos_);
  if (n > max_payload_) {
    auto e = Error::make(ErrorCode::invalid_argument, "frame of " + std::to_string(n) +
                                                          " bytes exceeds the limit of " + std::to_string(max_payload_));
    if (mode_ == Oversize::fail) {
      failed_ = true;
      buf_.clear();
      pos_ = 0;
      return e;
    }
    pos_ += kFrameHeaderBytes;
    auto drop = std::min<uint64_t>(n, buffered());
    pos_ += drop;
    skipping_ = n - drop;
    if (pos_ == buf_.size()) buf_.clear(), pos_ = 0;
    return e;
  }
  if (buffered() < kFrameHeaderBytes + n) return std::nullopt;
  std::string out(buf_, pos_ + kFrameHeaderBytes, n);
  pos_ += kFrameHeaderBytes + n;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  return out;
}

std::optional<Result<proto::Message>> MessageReader::next() {
  auto payload = frames_.next();
  if (!payload) return std::nullopt;
  if (!*payload) return std::move(*payload).error();
  return proto::decode(**payload);
}

}  // namespace sandbox
