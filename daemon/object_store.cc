#include "daemon/object_store.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>

#include "daemon/digest.h"

namespace sandbox::daemon {
namespace {

// Connecting is short on any network a store is worth using over.
constexpr long kMaxConnectMs = 10'000;
// An error's body is read for S3's <Code> and no further.
constexpr size_t kMaxErrorBody = 4096;
// A credentials file holds two short lines (and maybe a few profiles).
constexpr size_t kMaxCredentialsBytes = 64 << 10;
// SHA-256 of nothing: the payload hash of a GET.
constexpr std::string_view kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

Error bad_url(std::string_view url, std::string_view why) {
  return Error::make(ErrorCode::invalid_argument,
                     "'" + std::string(url) + "' is not an http(s)://HOST[:PORT]/BUCKET[/PREFIX] URL: " + std::string(why));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// S3's <Code> of an error body, if it has a plain one.
std::string error_code_of(const std::string& body) {
  auto at = body.find("<Code>");
  auto end = body.find("</Code>");
  if (at == std::string::npos || end == std::string::npos || end < at + 6 || end - at > 70) return {};
  std::string code = body.substr(at + 6, end - at - 6);
  if (!std::all_of(code.begin(), code.end(), [](unsigned char c) { return std::isalnum(c); })) return {};
  return code;
}

using Curl = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using Headers = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

}  // namespace

Result<StoreUrl> parse_store_url(std::string_view url) {
  StoreUrl out;
  std::string_view rest;
  if (url.starts_with("https://")) out.https = true, rest = url.substr(8);
  else if (url.starts_with("http://")) rest = url.substr(7);
  else return bad_url(url, "the scheme is http or https");
  if (url.size() > 512) return bad_url(url, "longer than 512 bytes");
  auto slash = rest.find('/');
  if (slash == std::string_view::npos) return bad_url(url, "no bucket");
  auto authority = rest.substr(0, slash);
  auto colon = authority.rfind(':');
  auto host = authority.substr(0, colon);
  if (host.empty() || host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") !=
                          std::string_view::npos)
    return bad_url(url, "the host is a name or an IPv4 address");
  if (colon != std::string_view::npos) {
    auto port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535)
      return bad_url(url, "the port is 1-65535");
  }
  out.authority = std::string(authority);
  auto path = rest.substr(slash + 1);
  while (path.ends_with('/')) path.remove_suffix(1);
  auto bucket = path.substr(0, path.find('/'));
  if (bucket.size() < 3 || bucket.size() > 63 ||
      bucket.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") != std::string_view::npos ||
      bucket.front() == '-' || bucket.front() == '.' || bucket.back() == '-' || bucket.back() == '.')
    return bad_url(url, "the bucket is 3-63 of a-z 0-9 . -");
  auto prefix = bucket.size() < path.size() ? path.substr(bucket.size() + 1) : std::string_view{};
  if (prefix.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/") !=
      std::string_view::npos)
    return bad_url(url, "the prefix is of A-Z a-z 0-9 - . _ ~ /");
  for (size_t start = 0; start <= prefix.size() && !prefix.empty();) {
    auto end = prefix.find('/', start);
    auto segment = prefix.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (segment.empty() || segment == "." || segment == "..") return bad_url(url, "an empty, . or .. segment");
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  out.base = "/" + std::string(path);
  return out;
}

Result<SigV4Credentials> parse_store_credentials(std::string_view text) {
  SigV4Credentials c;
  if (text.size() > kMaxCredentialsBytes) return Error::make(ErrorCode::invalid_argument, "larger than 64 KiB");
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto line = trim(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty() || line.front() == '#' || line.front() == ';' || line.front() == '[') continue;
    auto eq = line.find('=');
    if (eq == std::string_view::npos) return Error::make(ErrorCode::invalid_argument, "a line without '='");
    auto key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    bool printable = std::all_of(value.begin(), value.end(), [](unsigned char ch) { return ch > 0x20 && ch < 0x7f; });
    if (!printable || value.size() > 256)
      return Error::make(ErrorCode::invalid_argument, std::string(key) + " is not a usable key");
    if (key == "aws_access_key_id") c.access_key_id = std::string(value);
    else if (key == "aws_secret_access_key") c.secret_access_key = std::string(value);
  }
  if (c.access_key_id.empty() || c.secret_access_key.empty())
    return Error::make(ErrorCode::invalid_argument, "needs aws_access_key_id and aws_secret_access_key");
  // '/' and ',' would break the Credential= field.
  if (c.access_key_id.find_first_of("/,") != std::string::npos)
    return Error::make(ErrorCode::invalid_argument, "aws_access_key_id is not a usable key");
  return c;
}

Result<SigV4Credentials> read_store_credentials(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::sys("open", path);
  std::string text(kMaxCredentialsBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  auto c = parse_store_credentials(text);
  if (!c) return std::move(c).error().context(path);
  return c;
}

// What a request sends: nothing, a string or a file's first `size` bytes.
struct ObjectStore::Body {
  std::string_view data;
  int fd = -1;
  uint64_t size = 0, offset = 0;
  std::string sha256;
  int read_errno = 0;
};

// Where a response goes: a string or a file, at most `max` bytes.
struct ObjectStore::Sink {
  CURL* curl = nullptr;
  std::string* data = nullptr;
  int fd = -1;
  uint64_t max = 0, written = 0;
  bool over = false;
  int write_errno = 0;
  std::string error_body;
};

ObjectStore::ObjectStore(ObjectStoreOptions options) : options_(std::move(options)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string ObjectStore::url_of(const std::string& name) const {
  return std::string(options_.url.https ? "https://" : "http://") + options_.url.authority +
         uri_encode_path(options_.url.base + "/" + name);
}

Result<void> ObjectStore::transfer(const std::string& method, const std::string& name, Body* body, Sink* sink,
                                   const std::atomic<bool>& stop) const {
  Curl curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return Error::make(ErrorCode::internal, "curl_easy_init failed");
  CURL* c = curl.get();
  auto url = url_of(name);
  auto path = uri_encode_path(options_.url.base + "/" + name);
  std::string date = amz_date(std::time(nullptr));
  std::string payload = body ? body->sha256 : std::string(kEmptySha256);
  std::vector<std::pair<std::string, std::string>> signed_headers = {
      {"Host", options_.url.authority}, {"x-amz-content-sha256", payload}, {"x-amz-date", date}};
  curl_slist* list = nullptr;
  for (const auto& [k, v] : signed_headers) list = curl_slist_append(list, (k + ": " + v).c_str());
  if (!options_.credentials.empty()) {
    SigV4Request r{method, path, "", signed_headers, payload, date, options_.region, "s3"};
    list = curl_slist_append(list, ("Authorization: " + sigv4_authorization(r, options_.credentials)).c_str());
  }
  list = curl_slist_append(list, "Expect:");  // no 100-continue round trip
  Headers headers(list, curl_slist_free_all);

  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");  // the store directly, whatever the environment says
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout_ms));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, std::min<long>(options_.timeout_ms, kMaxConnectMs));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &stop);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, +[](void* p, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
    return static_cast<const std::atomic<bool>*>(p)->load() ? 1 : 0;
  });
  if (body) {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body->fd >= 0 ? body->size : body->data.size()));
    curl_easy_setopt(c, CURLOPT_READDATA, body);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, +[](char* buf, size_t size, size_t n, void* p) -> size_t {
      auto* b = static_cast<Body*>(p);
      size_t want = size * n;
      if (b->fd < 0) {
        size_t len = std::min(want, b->data.size());
        std::copy_n(b->data.data(), len, buf);
        b->data.remove_prefix(len);
        return len;
      }
      want = static_cast<size_t>(std::min<uint64_t>(want, b->size - b->offset));
      if (want == 0) return 0;
      ssize_t got = ::pread(b->fd, buf, want, static_cast<off_t>(b->offset));
      if (got <= 0) {
        b->read_errno = got < 0 ? errno : EIO;
        return CURL_READFUNC_ABORT;
      }
      b->offset += static_cast<uint64_t>(got);
      return static_cast<size_t>(got);
    });
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(sink->max));
  }
  Sink discard;
  if (!sink) sink = &discard;
  sink->curl = c;
  curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* ud) -> size_t {
    auto* s = static_cast<Sink*>(ud);
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299 || (!s->data && s->fd < 0)) {
      if (s->error_body.size() >= kMaxErrorBody) return 0;
      s->error_body.append(p, std::min(len, kMaxErrorBody - s->error_body.size()));
      return len;
    }
    if (len > s->max - s->written) {
      s->over = true;
      return 0;
    }
    if (s->data) {
      s->data->append(p, len);
    } else {
      for (size_t done = 0; done < len;) {
        ssize_t w = ::write(s->fd, p + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          s->write_errno = w < 0 ? errno : EIO;
          return 0;
        }
        done += static_cast<size_t>(w);
      }
    }
    s->written += len;
    return len;
  });

  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  auto what = method + " " + url;
  if (sink->over || rc == CURLE_FILESIZE_EXCEEDED)
    return Error::make(ErrorCode::capacity, what + ": larger than " + std::to_string(sink->max) + " bytes");
  if (sink->write_errno) return Error::sys("write", name, sink->write_errno).context(what);
  if (body && body->read_errno) return Error::sys("read", name, body->read_errno).context(what);
  if (rc == CURLE_OPERATION_TIMEDOUT)
    return Error::make(ErrorCode::timeout, what + ": no answer within " + std::to_string(options_.timeout_ms) + " ms");
  if (rc == CURLE_ABORTED_BY_CALLBACK) return Error::make(ErrorCode::communication, what + ": stopped");
  if (rc != CURLE_OK) return Error::make(ErrorCode::communication, what + ": " + curl_easy_strerror(rc));
  if (status == 404) return Error::make(ErrorCode::not_found, what + ": not in the store");
  if (status < 200 || status > 299) {
    auto code = error_code_of(sink->error_body);
    return Error::make(ErrorCode::communication,
                       what + ": HTTP " + std::to_string(status) + (code.empty() ? "" : " " + code));
  }
  return ok();
}

Result<std::string> ObjectStore::get(const std::string& name, size_t max_bytes, const std::atomic<bool>& stop) const {
  std::string out;
  Sink sink;
  sink.data = &out;
  sink.max = max_bytes;
  if (auto r = transfer("GET", name, nullptr, &sink, stop); !r) return r.error();
  return out;
}

Result<uint64_t> ObjectStore::get_to_fd(const std::string& name, int fd, uint64_t max_bytes,
                                        const std::atomic<bool>& stop) const {
  Sink sink;
  sink.fd = fd;
  sink.max = max_bytes;
  if (auto r = transfer("GET", name, nullptr, &sink, stop); !r) return r.error();
  return sink.written;
}

Result<void> ObjectStore::put(const std::string& name, std::string_view data, const std::atomic<bool>& stop) const {
  Body body;
  body.data = data;
  body.sha256 = sha256_hex(data);
  return transfer("PUT", name, &body, nullptr, stop);
}

Result<void> ObjectStore::put_fd(const std::string& name, int fd, uint64_t size, const std::string& sha256,
                                 const std::atomic<bool>& stop) const {
  Body body;
  body.fd = fd;
  body.size = size;
  body.sha256 = sha256;
  return transfer("PUT", name, &body, nullptr, stop);
}

}  // namespace sandbox::daemon
