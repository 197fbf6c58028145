#include "common/net_frame.h"

#include <vector>

namespace sandbox::net {
namespace {

void put32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xff));
}
uint32_t get32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}
uint16_t get16(std::string_view s, size_t at) {
  return static_cast<uint16_t>((static_cast<unsigned char>(s[at]) << 8) | static_cast<unsigned char>(s[at + 1]));
}

}  // namespace

std::string encode_frame(FrameType type, uint32_t stream, std::string_view payload) {
  std::string out;
  out.reserve(kNetHeaderBytes + payload.size());
  out.push_back(static_cast<char>(type));
  out.append(3, '\0');
  put32(out, stream);
  put32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

std::optional<Result<Frame>> FrameReader::next() {
  std::string_view rest(buffer_.data() + pos_, buffer_.size() - pos_);
  if (rest.size() < kNetHeaderBytes) {
    // Compact once the consumed prefix dominates.
    if (pos_ > 0 && pos_ >= buffer_.size() / 2) {
      buffer_.erase(0, pos_);
      pos_ = 0;
    }
    return std::nullopt;
  }
  auto type = static_cast<uint8_t>(rest[0]);
  uint32_t stream = get32(rest, 4);
  uint32_t length = get32(rest, 8);
  if (type < static_cast<uint8_t>(FrameType::policy) || type > static_cast<uint8_t>(FrameType::dns_answer))
    return Result<Frame>(Error::make(ErrorCode::communication, "network frame of unknown type " + std::to_string(type)));
  if (length > kMaxNetPayload)
    return Result<Frame>(
        Error::make(ErrorCode::communication, "network frame of " + std::to_string(length) + " bytes"));
  if (rest.size() < kNetHeaderBytes + length) return std::nullopt;
  Frame f{static_cast<FrameType>(type), stream, std::string(rest.substr(kNetHeaderBytes, length))};
  pos_ += kNetHeaderBytes + length;
  if (pos_ == buffer_.size()) {
    buffer_.clear();
    pos_ = 0;
  }
  return Result<Frame>(std::move(f));
}

std::string encode_open(const OpenTarget& t) {
  std::string out(1, static_cast<char>(t.family));
  std::string addr = t.address;
  addr.resize(16, '\0');
  out += addr;
  out += encode_u16(t.port);
  return out;
}

std::optional<OpenTarget> decode_open(std::string_view p) {
  if (p.size() != 19 || (p[0] != 4 && p[0] != 6)) return std::nullopt;
  OpenTarget t;
  t.family = static_cast<uint8_t>(p[0]);
  t.address = std::string(p.substr(1, t.family == 4 ? 4 : 16));
  t.port = get16(p, 17);
  return t;
}

std::string encode_u16(uint16_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v & 0xff)}; }
std::string encode_u32(uint32_t v) {
  std::string out;
  put32(out, v);
  return out;
}
std::optional<uint16_t> decode_u16(std::string_view p) {
  if (p.size() != 2) return std::nullopt;
  return get16(p, 0);
}
std::optional<uint32_t> decode_u32(std::string_view p) {
  if (p.size() != 4) return std::nullopt;
  return get32(p, 0);
}

std::string encode_policy(const Policy& policy) {
  std::string out(1, policy.egress ? 1 : 0);
  out += encode_u16(static_cast<uint16_t>(policy.ports.size()));
  for (auto p : policy.ports) out += encode_u16(p);
  return out;
}

std::optional<Policy> decode_policy(std::string_view p) {
  if (p.size() < 3 || static_cast<unsigned char>(p[0]) > 1) return std::nullopt;
  Policy policy;
  policy.egress = p[0] == 1;
  size_t n = get16(p, 1);
  if (n > kMaxPolicyPorts || p.size() != 3 + 2 * n) return std::nullopt;
  for (size_t i = 0; i < n; ++i) policy.ports.push_back(get16(p, 3 + 2 * i));
  return policy;
}

}  // namespace sandbox::net
