#include "daemon/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "common/io.h"
#include "common/unique_fd.h"

namespace sandbox::daemon {
namespace {

using Ctx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

std::string finish(EVP_MD_CTX* ctx) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  return to_hex({reinterpret_cast<const char*>(md), len});
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  Ctx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx.get(), data.data(), data.size());
  return finish(ctx.get());
}

Result<std::string> sha256_file(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::sys("open", path);
  auto hash = sha256_fd(fd.get());
  if (!hash) return std::move(hash).error().context(path);
  return hash;
}

Result<std::string> sha256_fd(int fd, const std::atomic<bool>* stop) {
  Ctx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return Error::make(ErrorCode::internal, "SHA-256 unavailable");
  std::vector<char> buf(1 << 20);
  for (off_t at = 0;;) {
    if (stop && *stop) return Error::make(ErrorCode::internal, "stopped");
    ssize_t n = ::pread(fd, buf.data(), buf.size(), at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("read");
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
    at += n;
  }
  return finish(ctx.get());
}

struct Sha256::State {
  State() : ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr); }
  Ctx ctx;
};

Sha256::Sha256() : state_(new State) {}
Sha256::~Sha256() { delete state_; }
void Sha256::update(const void* data, size_t size) { EVP_DigestUpdate(state_->ctx.get(), data, size); }
std::string Sha256::hex() { return finish(state_->ctx.get()); }

}  // namespace sandbox::daemon
