// The network channel: a second virtio-serial port beside the agent's,
// carrying TCP streams and DNS messages between the guest's relay
// (agent/net.cc) and the daemon (daemon/net_relay.cc), which alone decides
// what may pass. A VM has no NIC: this channel is its only way out.
//
// Frame: 12-byte header (type u8, reserved u8 u16, stream u32, length u32,
// all big-endian), then `length` payload bytes (at most kMaxNetPayload).
//   policy      host->guest  stream 0: u8 egress, u16 n, n x u16 ports to listen on
//   policy_ack  guest->host  stream 0: the policy is in force
//   open        guest->host  a connection the guest made: u8 family (4|6),
//                            16 address bytes, u16 port (its original destination)
//               host->guest  a connection to an exposed port: u16 guest port
//   open_ok     either       the other side's stream is connected
//   data        either       bytes; each side sends at most kNetWindow bytes
//                            its peer has not returned credit for
//   window      either       u32: that many bytes were delivered, send more
//   close       either       the sender sends no more (half close)
//   reset       either       the stream is gone: u8 reason
//   dns_query   guest->host  stream = tag: one DNS message
//   dns_answer  host->guest  stream = tag: one DNS message
// Guest-opened streams have odd ids, host-opened even ones.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sandbox/result.h>

namespace sandbox::net {

// Name of the virtio-serial port of the network channel.
inline constexpr std::string_view kNetPortName = "org.sandboxd.net.0";
inline constexpr size_t kNetHeaderBytes = 12;
// One data frame: a socket read's worth, small enough to interleave streams.
inline constexpr size_t kMaxNetPayload = 64 << 10;
// Unacknowledged bytes in flight per stream and direction: the buffer each
// side may need per stream.
inline constexpr uint32_t kNetWindow = 256 << 10;
// DNS messages over the channel (TCP DNS allows 64 KiB; real queries are tiny).
inline constexpr size_t kMaxDnsMessage = 4096;
// Ports one policy makes the guest listen on: 80, 443, the proxy and one per rule.
inline constexpr size_t kMaxPolicyPorts = 67;
// The HTTP proxy inside the guest (http://127.0.0.1:3128), for clients that
// prefer one: its CONNECT and absolute-form requests are judged by the
// daemon exactly like direct connections.
inline constexpr uint16_t kProxyPort = 3128;
// The SOCKS5 proxy inside the guest (socks5h://127.0.0.1:1080): a CONNECT
// to a name or address, judged the same way.
inline constexpr uint16_t kSocksPort = 1080;

enum class FrameType : uint8_t {
  policy = 1,
  policy_ack = 2,
  open = 3,
  open_ok = 4,
  data = 5,
  window = 6,
  close = 7,
  reset = 8,
  dns_query = 9,
  dns_answer = 10,
};

enum class ResetReason : uint8_t { closed = 0, refused = 1, denied = 2, limit = 3, timeout = 4, error = 5 };

struct Frame {
  FrameType type = FrameType::data;
  uint32_t stream = 0;
  std::string payload;
};

std::string encode_frame(FrameType type, uint32_t stream, std::string_view payload = {});

// Reassembles frames from a byte stream. A header with an unknown type or
// an oversize length is an error: the peer is broken or hostile, and the
// channel cannot resynchronize.
class FrameReader {
 public:
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete frame, nullopt if more bytes are needed, or an error.
  std::optional<Result<Frame>> next();
  size_t buffered() const { return buffer_.size() - pos_; }

 private:
  std::string buffer_;
  size_t pos_ = 0;
};

// The payloads with structure.
struct OpenTarget {
  uint8_t family = 4;  // 4 or 6
  std::string address;  // 4 or 16 bytes
  uint16_t port = 0;
};
std::string encode_open(const OpenTarget& target);
std::optional<OpenTarget> decode_open(std::string_view payload);
std::string encode_u16(uint16_t v);
std::string encode_u32(uint32_t v);
std::optional<uint16_t> decode_u16(std::string_view payload);
std::optional<uint32_t> decode_u32(std::string_view payload);

struct Policy {
  bool egress = false;
  std::vector<uint16_t> ports;
};
std::string encode_policy(const Policy& policy);
std::optional<Policy> decode_policy(std::string_view payload);

}  // namespace sandbox::net
