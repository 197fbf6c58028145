// Describing a struct once, as a table of fields: `Schema<T>::fields` is a
// tuple of {key, member, bound}. The msgpack codec, the JSON printer and
// the D-Bus dictionaries walk that table; nobody spells a struct's fields
// again. systemd's sd_json_dispatch_field tables are the model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

namespace sandbox::schema {

enum Flags : unsigned {
  kPlain = 0,
  kText = 1,   // a std::string that is a name or a message (msgpack str), not data (bin)
  kEmbed = 2,  // a described struct whose fields sit in the enclosing map
};

template <class T, class M, unsigned F = kPlain>
struct Field {
  using Owner = T;
  using Member = M;
  static constexpr unsigned flags = F;
  std::string_view key;
  M T::*member;
  // Strings: bytes. Integers and durations: the largest value. Lists and
  // maps: entries. Decoding refuses anything past it.
  uint64_t bound;
};

template <class T, class M>
constexpr Field<T, M> field(std::string_view key, M T::*member, uint64_t bound = UINT64_MAX) {
  return {key, member, bound};
}
template <class T>
constexpr Field<T, std::string, kText> text(std::string_view key, std::string T::*member, uint64_t bound) {
  return {key, member, bound};
}
template <class T, class M>
constexpr Field<T, M, kEmbed> embed(M T::*member) {
  return {{}, member, 0};
}

// Specialized for every described struct: `static constexpr auto fields`,
// and for wire messages `static constexpr std::string_view type`.
template <class T>
struct Schema;

template <class T>
concept Described = requires { Schema<T>::fields; };

// Specialized for enums the wire carries by name: `name(E)` and `parse(string_view)`.
template <class E>
struct EnumNames;

template <class E>
concept NamedEnum = requires(E e) { EnumNames<E>::name(e); };

template <class T, class Fn>
constexpr void for_each_field(Fn&& fn) {
  std::apply([&](const auto&... f) { (fn(f), ...); }, Schema<T>::fields);
}

// Keys T puts in its map; an embedded struct counts its own.
template <class T>
constexpr size_t key_count() {
  size_t n = 0;
  for_each_field<T>([&](const auto& f) {
    using F = std::decay_t<decltype(f)>;
    if constexpr ((F::flags & kEmbed) != 0)
      n += key_count<typename F::Member>();
    else
      n += 1;
  });
  return n;
}

}  // namespace sandbox::schema
