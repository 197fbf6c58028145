#include "gateway/srv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/unique_fd.h"

namespace sandbox::gateway::dns {

namespace {

constexpr size_t kHeader = 12;
// Compression pointers followed in one name: a loop is malformed.
constexpr int kMaxPointers = 32;

struct Reader {
  std::string_view m;
  size_t pos = 0;
  bool u8(uint8_t* v) {
    if (pos + 1 > m.size()) return false;
    *v = static_cast<uint8_t>(m[pos++]);
    return true;
  }
  bool u16(uint16_t* v) {
    if (pos + 2 > m.size()) return false;
    *v = static_cast<uint16_t>(static_cast<uint8_t>(m[pos]) << 8 | static_cast<uint8_t>(m[pos + 1]));
    pos += 2;
    return true;
  }
  bool u32(uint32_t* v) {
    uint16_t hi, lo;
    if (!u16(&hi) || !u16(&lo)) return false;
    *v = static_cast<uint32_t>(hi) << 16 | lo;
    return true;
  }
  // A possibly compressed name at pos; pos moves past its first encoding.
  bool name(std::string* out) {
    out->clear();
    size_t p = pos;
    bool jumped = false;
    int pointers = 0;
    while (true) {
      if (p >= m.size()) return false;
      uint8_t len = static_cast<uint8_t>(m[p]);
      if ((len & 0xc0) == 0xc0) {
        if (p + 2 > m.size() || ++pointers > kMaxPointers) return false;
        size_t target = static_cast<size_t>(len & 0x3f) << 8 | static_cast<uint8_t>(m[p + 1]);
        if (!jumped) pos = p + 2;
        jumped = true;
        // Pointers go backwards only (RFC 1035 4.1.4 points to a prior occurrence).
        if (target >= p) return false;
        p = target;
        continue;
      }
      if (len & 0xc0) return false;  // the reserved label types
      if (len == 0) {
        if (!jumped) pos = p + 1;
        return true;
      }
      if (p + 1 + len > m.size() || out->size() + len + 1 > 255) return false;
      if (!out->empty()) *out += '.';
      for (size_t i = 0; i < len; ++i) {
        char c = m[p + 1 + i];
        *out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      }
      p += 1 + len;
    }
  }
};

// Target names become host names in URLs: only what a host name may hold.
bool hostname_ok(std::string_view n) {
  if (n.empty()) return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_')) return false;
  return true;
}

}  // namespace

std::optional<std::string> build_query(uint16_t id, std::string_view name, uint16_t qtype) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return std::nullopt;
  std::string q;
  q += static_cast<char>(id >> 8);
  q += static_cast<char>(id & 0xff);
  q += '\x01';  // RD
  q += '\x00';
  q += std::string("\x00\x01\x00\x00\x00\x00\x00\x00", 8);  // one question
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    size_t len = dot - start;
    if (len == 0 || len > 63) return std::nullopt;
    q += static_cast<char>(len);
    q.append(name.substr(start, len));
    start = dot + 1;
  }
  q += '\0';
  q += static_cast<char>(qtype >> 8);
  q += static_cast<char>(qtype & 0xff);
  q += static_cast<char>(kClassIN >> 8);
  q += static_cast<char>(kClassIN & 0xff);
  return q;
}

std::optional<SrvAnswer> parse_answer(std::string_view message, uint16_t id) {
  if (message.size() < kHeader || message.size() > kMaxMessage) return std::nullopt;
  Reader r{message};
  uint16_t rid, flags, qd, an, ns, ar;
  if (!r.u16(&rid) || !r.u16(&flags) || !r.u16(&qd) || !r.u16(&an) || !r.u16(&ns) || !r.u16(&ar)) return std::nullopt;
  if (rid != id || !(flags & 0x8000) || ((flags >> 11) & 0xf) != 0) return std::nullopt;  // a response to a query
  SrvAnswer a;
  a.rcode = flags & 0xf;
  a.truncated = flags & 0x0200;
  std::string name;
  for (uint16_t i = 0; i < qd; ++i) {
    uint16_t t, c;
    if (!r.name(&name) || !r.u16(&t) || !r.u16(&c)) return std::nullopt;
  }
  uint32_t total = static_cast<uint32_t>(an) + ns + ar;
  for (uint32_t i = 0; i < total; ++i) {
    uint16_t type, cls, rdlen;
    uint32_t ttl;
    if (!r.name(&name) || !r.u16(&type) || !r.u16(&cls) || !r.u32(&ttl) || !r.u16(&rdlen)) return std::nullopt;
    if (r.pos + rdlen > message.size()) return std::nullopt;
    size_t end = r.pos + rdlen;
    bool authority = i >= an && i < static_cast<uint32_t>(an) + ns;
    if (cls == kClassIN && !authority) {
      if (type == kTypeSRV && i < an) {
        SrvRecord s;
        Reader d{message.substr(0, end), r.pos};
        if (!d.u16(&s.priority) || !d.u16(&s.weight) || !d.u16(&s.port) || !d.name(&s.target) || d.pos != end)
          return std::nullopt;
        if (a.records.size() < kMaxRecords && hostname_ok(s.target) && s.port != 0) a.records.push_back(std::move(s));
      } else if ((type == kTypeA && rdlen == 4) || (type == kTypeAAAA && rdlen == 16)) {
        char text[INET6_ADDRSTRLEN];
        if (inet_ntop(type == kTypeA ? AF_INET : AF_INET6, message.data() + r.pos, text, sizeof text)) {
          auto& list = a.addresses[name];
          if (a.addresses.size() <= kMaxRecords && list.size() < 8) list.emplace_back(text);
        }
      }
    }
    r.pos = end;
  }
  return a;
}

Result<SrvAnswer> query_srv(const std::string& server, std::string_view name, std::chrono::milliseconds timeout) {
  auto fail = [&](std::string what, int err = 0) {
    return Error::make(ErrorCode::communication,
                       "DNS server " + server + ": " + what + (err ? std::string(": ") + std::strerror(err) : ""));
  };
  sockaddr_storage ss{};
  socklen_t sl = 0;
  auto colon = server.rfind(':');
  if (colon == std::string::npos) return fail("not IP:PORT");
  std::string host = server.substr(0, colon);
  int port = std::atoi(server.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return fail("bad port");
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    sl = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    sl = sizeof *v6;
  } else {
    return fail("not an IP address");
  }
  uint16_t id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) return fail("getrandom", errno);
  auto q = build_query(id, name);
  if (!q) return fail("'" + std::string(name.substr(0, 300)) + "' is not a DNS name");
  unique_fd fd(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail("socket", errno);
  // connect() makes the kernel drop datagrams from anyone but the server.
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0) return fail("connect", errno);
  if (::send(fd.get(), q->data(), q->size(), 0) != static_cast<ssize_t>(q->size())) return fail("send", errno);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string buf(kMaxMessage, '\0');
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return fail("no answer within " + std::to_string(timeout.count()) + " ms");
    pollfd p{fd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return fail("poll", errno);
    if (n <= 0) continue;
    ssize_t got = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail("recv", errno);
    }
    // Anything but the answer to our query (a stale or forged datagram) is ignored.
    if (auto a = parse_answer(std::string_view(buf.data(), static_cast<size_t>(got)), id)) return *a;
  }
}

}  // namespace sandbox::gateway::dns
