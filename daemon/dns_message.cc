#include "daemon/dns_message.h"

namespace sandbox::daemon::dns {
namespace {

constexpr size_t kHeader = 12;
// Compression pointers followed while reading one name: enough for any
// honest message, and a loop can never run longer.
constexpr int kMaxPointers = 16;

uint16_t get16(std::string_view m, size_t at) {
  return static_cast<uint16_t>((static_cast<unsigned char>(m[at]) << 8) | static_cast<unsigned char>(m[at + 1]));
}
void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

// Reads a name at *pos (advancing past it); `allow_pointers` for responses.
std::optional<std::string> read_name(std::string_view m, size_t* pos, bool allow_pointers) {
  std::string name;
  size_t at = *pos;
  bool jumped = false;
  int pointers = 0;
  for (;;) {
    if (at >= m.size()) return std::nullopt;
    auto len = static_cast<unsigned char>(m[at]);
    if (len == 0) {
      if (!jumped) *pos = at + 1;
      break;
    }
    if ((len & 0xc0) == 0xc0) {
      if (!allow_pointers || at + 1 >= m.size() || ++pointers > kMaxPointers) return std::nullopt;
      if (!jumped) *pos = at + 2;
      jumped = true;
      at = get16(m, at) & 0x3fff;
      continue;
    }
    if ((len & 0xc0) != 0 || at + 1 + len > m.size()) return std::nullopt;
    if (!name.empty()) name.push_back('.');
    name.append(m.substr(at + 1, len));
    if (name.size() > 255) return std::nullopt;
    at += 1 + len;
  }
  return name;
}

void write_name(std::string& out, std::string_view name) {
  while (!name.empty()) {
    auto dot = name.find('.');
    auto label = name.substr(0, dot);
    out.push_back(static_cast<char>(label.size()));
    out.append(label);
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
  }
  out.push_back('\0');
}

}  // namespace

std::optional<Query> parse_query(std::string_view m) {
  if (m.size() < kHeader || m.size() > 4096) return std::nullopt;
  uint16_t flags = get16(m, 2);
  // A query (QR 0), opcode QUERY, one question; answers and authority empty.
  if ((flags & 0x8000) != 0 || ((flags >> 11) & 0xf) != 0) return std::nullopt;
  if (get16(m, 4) != 1 || get16(m, 6) != 0 || get16(m, 8) != 0) return std::nullopt;
  Query q;
  q.id = get16(m, 0);
  q.recursion_desired = (flags & 0x0100) != 0;
  size_t pos = kHeader;
  auto name = read_name(m, &pos, false);
  if (!name || pos + 4 > m.size()) return std::nullopt;
  q.name = std::move(*name);
  q.qtype = get16(m, pos);
  q.qclass = get16(m, pos + 2);
  // Anything after the question is an EDNS OPT record at most; ignored.
  return q;
}

std::string build_answer(const Query& q, uint8_t rcode, const std::vector<std::string>& addresses, uint32_t ttl) {
  std::string out;
  put16(out, q.id);
  // QR, AA, RD echoed, RA.
  put16(out, static_cast<uint16_t>(0x8000 | 0x0400 | (q.recursion_desired ? 0x0100 : 0) | 0x0080 | (rcode & 0xf)));
  put16(out, 1);
  std::vector<const std::string*> answers;
  for (const auto& a : addresses)
    if ((q.qtype == kTypeA && a.size() == 4) || (q.qtype == kTypeAAAA && a.size() == 16)) answers.push_back(&a);
  put16(out, static_cast<uint16_t>(answers.size()));
  put16(out, 0);
  put16(out, 0);
  write_name(out, q.name);
  put16(out, q.qtype);
  put16(out, q.qclass);
  for (const auto* a : answers) {
    put16(out, 0xc00c);  // the question's name
    put16(out, q.qtype);
    put16(out, kClassIN);
    put16(out, static_cast<uint16_t>(ttl >> 16));
    put16(out, static_cast<uint16_t>(ttl & 0xffff));
    put16(out, static_cast<uint16_t>(a->size()));
    out += *a;
  }
  return out;
}

std::string build_query(uint16_t id, std::string_view name, uint16_t qtype) {
  std::string out;
  put16(out, id);
  put16(out, 0x0100);  // RD
  put16(out, 1);
  put16(out, 0);
  put16(out, 0);
  put16(out, 0);
  write_name(out, name);
  put16(out, qtype);
  put16(out, kClassIN);
  return out;
}

std::optional<std::vector<std::string>> parse_response(std::string_view m, uint16_t id, uint16_t qtype) {
  if (m.size() < kHeader || get16(m, 0) != id || (get16(m, 2) & 0x8000) == 0) return std::nullopt;
  uint8_t rcode = get16(m, 2) & 0xf;
  std::vector<std::string> out;
  if (rcode == kNxDomain) return out;
  if (rcode != kNoError) return std::nullopt;
  size_t qd = get16(m, 4), an = get16(m, 6);
  size_t pos = kHeader;
  for (size_t i = 0; i < qd; ++i) {
    if (!read_name(m, &pos, true) || pos + 4 > m.size()) return std::nullopt;
    pos += 4;
  }
  for (size_t i = 0; i < an; ++i) {
    if (!read_name(m, &pos, true) || pos + 10 > m.size()) return std::nullopt;
    uint16_t type = get16(m, pos), cls = get16(m, pos + 2), len = get16(m, pos + 8);
    pos += 10;
    if (pos + len > m.size()) return std::nullopt;
    bool fits = (type == kTypeA && len == 4) || (type == kTypeAAAA && len == 16);
    if (type == qtype && cls == kClassIN && fits && out.size() < kMaxAddresses) out.emplace_back(m.substr(pos, len));
    pos += len;
  }
  return out;
}

}  // namespace sandbox::daemon::dns
