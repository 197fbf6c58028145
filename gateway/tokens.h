// Bearer tokens of the gateway: a file of "TOKEN NAME [MAX_CONCURRENT]"
// lines ('#' starts a comment). The name is who the token is in logs and
// who owns the sessions it opens; MAX_CONCURRENT bounds its requests in
// flight (429 past it).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <sandbox/result.h>

namespace sandbox::gateway {

// Requests one token may have in flight unless its line says otherwise.
inline constexpr uint32_t kDefaultConcurrent = 8;
// Bounds on the file: tokens and line length.
inline constexpr size_t kMaxTokens = 10'000;
inline constexpr size_t kMaxTokenLine = 1024;

struct Token {
  std::string name;
  uint32_t max_concurrent = kDefaultConcurrent;
};

class Tokens {
 public:
  // Parses the text of a token file; errors name the line.
  static Result<Tokens> parse(std::string_view text, std::string_view origin);
  static Result<Tokens> load(const std::string& path);
  // The token's entry for an "Authorization: Bearer ..." value, or nullopt.
  std::optional<Token> check(std::string_view authorization) const;
  size_t size() const { return tokens_.size(); }

 private:
  std::map<std::string, Token, std::less<>> tokens_;
};

// Requests in flight per token name, against each token's quota.
class Quotas {
 public:
  class Hold {
   public:
    Hold() = default;
    Hold(Quotas* q, std::string name) : q_(q), name_(std::move(name)) {}
    Hold(Hold&& o) noexcept : q_(std::exchange(o.q_, nullptr)), name_(std::move(o.name_)) {}
    Hold& operator=(Hold&&) = delete;
    ~Hold();

   private:
    Quotas* q_ = nullptr;
    std::string name_;
  };
  // A hold on one more request of `token`, or nullopt when it is at its quota.
  std::optional<Hold> take(const Token& token);

 private:
  std::mutex mu_;
  std::map<std::string, uint32_t> in_flight_;
};

}  // namespace sandbox::gateway
