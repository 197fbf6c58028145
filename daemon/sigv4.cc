#include "daemon/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>

#include "common/io.h"
#include "daemon/digest.h"

namespace sandbox::daemon {
namespace {

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), md, &len);
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Header values are signed trimmed, inner runs of spaces as one.
std::string trim_value(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

}  // namespace

std::string uri_encode_path(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string amz_date(std::time_t t) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string sigv4_authorization(const SigV4Request& r, const SigV4Credentials& c) {
  std::vector<std::pair<std::string, std::string>> headers;
  for (const auto& [name, value] : r.headers) headers.emplace_back(lower(name), trim_value(value));
  std::sort(headers.begin(), headers.end());
  std::string canonical_headers, signed_headers;
  for (const auto& [name, value] : headers) {
    canonical_headers += name + ":" + value + "\n";
    signed_headers += (signed_headers.empty() ? "" : ";") + name;
  }
  std::string canonical_request = r.method + "\n" + r.path + "\n" + r.query + "\n" + canonical_headers + "\n" +
                                  signed_headers + "\n" + r.payload_sha256;
  std::string date = r.amz_date.substr(0, 8);
  std::string scope = date + "/" + r.region + "/" + r.service + "/aws4_request";
  std::string to_sign = "AWS4-HMAC-SHA256\n" + r.amz_date + "\n" + scope + "\n" + sha256_hex(canonical_request);
  std::string key = hmac_sha256("AWS4" + c.secret_access_key, date);
  key = hmac_sha256(key, r.region);
  key = hmac_sha256(key, r.service);
  key = hmac_sha256(key, "aws4_request");
  return "AWS4-HMAC-SHA256 Credential=" + c.access_key_id + "/" + scope + ",SignedHeaders=" + signed_headers +
         ",Signature=" + to_hex(hmac_sha256(key, to_sign));
}

}  // namespace sandbox::daemon
