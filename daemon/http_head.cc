#include "daemon/http_head.h"

#include <algorithm>
#include <charconv>

namespace sandbox::daemon::http {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "name[:port]" or "[v6]:port" into the head; false if malformed.
bool split_authority(std::string_view a, Head* out) {
  std::string_view host = a, port;
  if (!a.empty() && a.front() == '[') {
    auto close = a.find(']');
    if (close == std::string_view::npos) return false;
    host = a.substr(0, close + 1);
    auto rest = a.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
  } else if (auto colon = a.rfind(':'); colon != std::string_view::npos) {
    host = a.substr(0, colon);
    port = a.substr(colon + 1);
  }
  if (host.empty()) return false;
  for (char c : host)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '/' || c == '@') return false;
  if (!port.empty()) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || end != port.data() + port.size() || v == 0 || v > 65535) return false;
    out->has_port = true;
    out->port = static_cast<uint16_t>(v);
  }
  out->host = std::string(host);
  return true;
}

}  // namespace

Head parse_request_head(std::string_view bytes) {
  Head out;
  auto end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    // The method must be a token from the first byte on: anything else is
    // not HTTP, and a head that never ends is refused at the bound.
    auto sp = bytes.find(' ');
    auto m = bytes.substr(0, sp == std::string_view::npos ? bytes.size() : sp);
    if (m.size() > 16 || !std::all_of(m.begin(), m.end(), [](char c) { return c >= 'A' && c <= 'Z'; }) ||
        bytes.size() >= kMaxHeadBytes)
      out.verdict = Verdict::not_http;
    return out;
  }
  std::string_view head = bytes.substr(0, end);
  out.verdict = Verdict::not_http;
  auto eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  auto sp1 = line.find(' ');
  auto sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return out;
  out.method = std::string(line.substr(0, sp1));
  if (out.method.empty() || !std::all_of(out.method.begin(), out.method.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
    return out;
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!line.substr(sp2 + 1).starts_with("HTTP/1.")) return out;
  std::string_view host_header;
  int hosts = 0;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    auto e = rest.find("\r\n");
    auto h = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    auto colon = h.find(':');
    if (colon == std::string_view::npos) return out;
    if (iequals(h.substr(0, colon), "host")) {
      host_header = trim(h.substr(colon + 1));
      ++hosts;
    }
  }
  // Two Host headers: which would the server believe? Refuse.
  if (hosts > 1) return out;
  if (out.method == "CONNECT") {
    if (!split_authority(target, &out) || !out.has_port) return out;
    out.verdict = Verdict::host;
    return out;
  }
  if (hosts == 0) {
    out.verdict = Verdict::no_host;
    return out;
  }
  if (!split_authority(host_header, &out)) return out;
  // An absolute-form target names the host too; it must agree.
  if (target.starts_with("http://")) {
    auto auth = target.substr(7, target.find('/', 7) == std::string_view::npos ? std::string_view::npos
                                                                                : target.find('/', 7) - 7);
    Head t;
    if (!split_authority(auth, &t) || !iequals(t.host, out.host)) return out;
  }
  out.verdict = Verdict::host;
  return out;
}

}  // namespace sandbox::daemon::http
