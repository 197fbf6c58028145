// AWS Signature Version 4, for requests to the shared cache's object
// store (S3 and the stores that speak its API). Pure: the time and the
// payload's hash are inputs, so AWS's published examples are its tests.
// The HMAC and SHA-256 are OpenSSL's; only the canonical form is here.
#pragma once

#include <ctime>
#include <string>
#include <utility>
#include <vector>

namespace sandbox::daemon {

struct SigV4Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  bool empty() const { return access_key_id.empty(); }
};

struct SigV4Request {
  std::string method;  // "GET", "PUT"
  std::string path;    // as sent, already URI-encoded: "/bucket/prefix/name"
  std::string query;   // the canonical query string; "" for none
  // Every header that is signed (host and the x-amz-* ones at least), names
  // in any case; each is sent exactly as given.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_sha256;  // lowercase hex of the body
  std::string amz_date;        // "20130524T000000Z"
  std::string region = "us-east-1";
  std::string service = "s3";
};

// The Authorization header's value: "AWS4-HMAC-SHA256 Credential=...,
// SignedHeaders=..., Signature=...".
std::string sigv4_authorization(const SigV4Request& request, const SigV4Credentials& credentials);
// ISO 8601 basic format in UTC, as x-amz-date wants it.
std::string amz_date(std::time_t t);
// S3's URI encoding of a path: unreserved characters and '/' as they are,
// every other byte as %XX.
std::string uri_encode_path(std::string_view path);

}  // namespace sandbox::daemon
