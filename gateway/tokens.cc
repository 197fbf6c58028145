#include "gateway/tokens.h"

#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

namespace sandbox::gateway {
namespace {

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

bool printable(std::string_view s) {
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

}  // namespace

Result<Tokens> Tokens::parse(std::string_view text, std::string_view origin) {
  Tokens t;
  size_t n = 0;
  while (!text.empty()) {
    ++n;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    auto where = std::string(origin) + ":" + std::to_string(n) + ": ";
    if (line.size() > kMaxTokenLine) return Error::make(ErrorCode::invalid_argument, where + "line too long");
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    auto w = words(line);
    if (w.empty()) continue;
    if (w.size() < 2 || w.size() > 3)
      return Error::make(ErrorCode::invalid_argument, where + "expected 'TOKEN NAME [MAX_CONCURRENT]'");
    if (w[0].size() < 16 || !printable(w[0]))
      return Error::make(ErrorCode::invalid_argument, where + "a token is at least 16 printable characters");
    if (!printable(w[1]) || w[1].size() > 64)
      return Error::make(ErrorCode::invalid_argument, where + "a name is at most 64 printable characters");
    Token tok{std::string(w[1]), kDefaultConcurrent};
    if (w.size() == 3) {
      auto [end, ec] = std::from_chars(w[2].data(), w[2].data() + w[2].size(), tok.max_concurrent);
      if (ec != std::errc() || end != w[2].data() + w[2].size() || tok.max_concurrent == 0 ||
          tok.max_concurrent > 10'000)
        return Error::make(ErrorCode::invalid_argument, where + "MAX_CONCURRENT is a number from 1 to 10000");
    }
    if (t.tokens_.size() >= kMaxTokens)
      return Error::make(ErrorCode::invalid_argument, where + "more than " + std::to_string(kMaxTokens) + " tokens");
    if (!t.tokens_.emplace(std::string(w[0]), std::move(tok)).second)
      return Error::make(ErrorCode::invalid_argument, where + "the same token twice");
  }
  return t;
}

Result<Tokens> Tokens::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::sys("open", path);
  std::ostringstream text;
  // A token file is small; a huge one is a mistake, not a token list.
  char buf[4096];
  size_t total = 0;
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    total += static_cast<size_t>(in.gcount());
    if (total > kMaxTokens * (kMaxTokenLine + 1))
      return Error::make(ErrorCode::invalid_argument, path + ": too large for a token file");
    text.write(buf, in.gcount());
  }
  return parse(text.str(), path);
}

std::optional<Token> Tokens::check(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() || authorization.substr(0, kBearer.size()) != kBearer) return std::nullopt;
  auto given = authorization.substr(kBearer.size());
  // Every token is compared in full, so the time taken does not say how
  // much of a guess was right.
  std::optional<Token> found;
  for (const auto& [token, entry] : tokens_) {
    unsigned char diff = token.size() != given.size();
    for (size_t i = 0; i < token.size(); ++i) diff |= static_cast<unsigned char>(token[i] ^ given[i % (given.size() ? given.size() : 1)]);
    if (diff == 0) found = entry;
  }
  return found;
}

Quotas::Hold::~Hold() {
  if (!q_) return;
  std::lock_guard lock(q_->mu_);
  if (auto it = q_->in_flight_.find(name_); it != q_->in_flight_.end() && --it->second == 0) q_->in_flight_.erase(it);
}

std::optional<Quotas::Hold> Quotas::take(const Token& token) {
  std::lock_guard lock(mu_);
  auto& n = in_flight_[token.name];
  if (n >= token.max_concurrent) {
    if (n == 0) in_flight_.erase(token.name);
    return std::nullopt;
  }
  ++n;
  return Hold(this, token.name);
}

}  // namespace sandbox::gateway
