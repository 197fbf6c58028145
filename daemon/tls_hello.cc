#include "daemon/tls_hello.h"

#include <cstdint>

namespace sandbox::daemon::tls {
namespace {

constexpr uint16_t kExtServerName = 0;
constexpr uint16_t kExtEch = 0xfe0d;

// A cursor that never reads past its end.
struct Reader {
  std::string_view s;
  size_t pos = 0;
  bool ok = true;
  size_t left() const { return s.size() - pos; }
  uint32_t n(size_t bytes) {
    if (!ok || left() < bytes) {
      ok = false;
      return 0;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
    pos += bytes;
    return v;
  }
  std::string_view take(size_t bytes) {
    if (!ok || left() < bytes) {
      ok = false;
      return {};
    }
    auto v = s.substr(pos, bytes);
    pos += bytes;
    return v;
  }
};

Hello parse(std::string_view bytes) {
  Hello out;
  if (bytes.size() < 5) {
    // A first byte that cannot start a handshake record decides at once.
    if (!bytes.empty() && bytes[0] != 0x16) out.verdict = Verdict::not_tls;
    return out;
  }
  Reader rec{bytes};
  uint32_t type = rec.n(1), major = rec.n(1);
  rec.n(1);
  uint32_t length = rec.n(2);
  if (type != 0x16 || major != 3 || length == 0 || length > (16 << 10)) {
    out.verdict = Verdict::not_tls;
    return out;
  }
  if (rec.left() < length) return out;  // need_more
  Reader h{rec.take(length)};
  // The handshake message must fit the record: fragmented hellos are not
  // something clients send, and refusing them keeps this bounded.
  if (h.n(1) != 1) {
    out.verdict = Verdict::not_tls;
    return out;
  }
  uint32_t hlen = h.n(3);
  Reader ch{h.take(hlen)};
  out.verdict = Verdict::not_tls;
  if (!h.ok) return out;
  ch.n(2);                  // legacy version
  ch.take(32);              // random
  ch.take(ch.n(1));         // session id
  ch.take(ch.n(2));         // cipher suites
  ch.take(ch.n(1));         // compression methods
  if (!ch.ok) return out;
  out.verdict = Verdict::no_sni;
  if (ch.left() == 0) return out;  // no extensions at all
  Reader ext{ch.take(ch.n(2))};
  if (!ch.ok) {
    out.verdict = Verdict::not_tls;
    return out;
  }
  bool seen = false;
  while (ext.ok && ext.left() >= 4) {
    uint32_t etype = ext.n(2);
    Reader body{ext.take(ext.n(2))};
    if (!ext.ok) break;
    if (etype == kExtEch) out.ech = true;
    if (etype != kExtServerName) continue;
    // Two server_name extensions: which would the server honour? Refuse.
    if (seen) {
      out.verdict = Verdict::not_tls;
      return out;
    }
    seen = true;
    Reader list{body.take(body.n(2))};
    while (list.ok && list.left() >= 3) {
      uint32_t ntype = list.n(1);
      auto name = list.take(list.n(2));
      if (!list.ok) break;
      if (ntype == 0) {
        if (!out.server_name.empty()) {  // two host names in one list
          out.verdict = Verdict::not_tls;
          return out;
        }
        out.server_name = std::string(name);
      }
    }
  }
  if (!ext.ok || ext.left() != 0) {
    out.verdict = Verdict::not_tls;
    out.server_name.clear();
    return out;
  }
  if (!out.server_name.empty()) out.verdict = Verdict::sni;
  return out;
}

}  // namespace

Hello parse_client_hello(std::string_view bytes) {
  Hello h = parse(bytes);
  // A name read before the hello turned out malformed is no name.
  if (h.verdict != Verdict::sni) h.server_name.clear();
  return h;
}

}  // namespace sandbox::daemon::tls
