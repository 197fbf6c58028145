// msgpack encoding of the messages in protocol.h, derived from their field
// tables: one generic encoder and one generic decoder, no per-message code.
#include <msgpack.hpp>

#include <algorithm>
#include <chrono>
#include <limits>
#include <type_traits>

#include "common/msgpack_scan.h"
#include "common/protocol.h"

namespace sandbox::schema {

std::optional<Language> EnumNames<Language>::parse(std::string_view s) {
  for (auto l : {Language::python, Language::javascript, Language::raw})
    if (language_name(l) == s) return l;
  return std::nullopt;
}

std::optional<Stream> EnumNames<Stream>::parse(std::string_view s) {
  if (s == "stdout") return Stream::out;
  if (s == "stderr") return Stream::err;
  return std::nullopt;
}

}  // namespace sandbox::schema

namespace sandbox::proto {
namespace {

using schema::Described;
using schema::for_each_field;
using schema::kEmbed;
using schema::kText;
using schema::NamedEnum;
using Packer = msgpack::packer<msgpack::sbuffer>;

template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};

// ---------------------------------------------------------------- encoding

void put_str(Packer& p, std::string_view s) {
  p.pack_str(static_cast<uint32_t>(s.size()));
  p.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
void put_bin(Packer& p, std::string_view s) {
  p.pack_bin(static_cast<uint32_t>(s.size()));
  p.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
}

template <class T>
void pack_fields(Packer& p, const T& v);

template <class T>
void pack_struct(Packer& p, const T& v) {
  p.pack_map(static_cast<uint32_t>(schema::key_count<T>()));
  pack_fields(p, v);
}

template <unsigned Flags, class M>
void pack_value(Packer& p, const M& m) {
  if constexpr (std::is_same_v<M, std::string>) {
    if constexpr ((Flags & kText) != 0) put_str(p, m);
    else put_bin(p, m);
  } else if constexpr (std::is_same_v<M, bool> || std::is_integral_v<M>) {
    p.pack(m);
  } else if constexpr (std::is_same_v<M, std::chrono::milliseconds>) {
    p.pack(static_cast<uint64_t>(std::max<int64_t>(m.count(), 0)));
  } else if constexpr (NamedEnum<M>) {
    put_str(p, schema::EnumNames<M>::name(m));
  } else if constexpr (std::is_same_v<M, EnvList>) {
    p.pack_map(static_cast<uint32_t>(m.size()));
    for (const auto& [k, v] : m) put_str(p, k), put_str(p, v);
  } else if constexpr (Described<M>) {
    pack_struct(p, m);
  } else if constexpr (is_vector<M>::value) {
    p.pack_array(static_cast<uint32_t>(m.size()));
    for (const auto& e : m) pack_value<Flags>(p, e);
  } else {
    static_assert(sizeof(M) == 0, "a field type the codec does not know");
  }
}

template <class T>
void pack_fields(Packer& p, const T& v) {
  for_each_field<T>([&](const auto& f) {
    using F = std::decay_t<decltype(f)>;
    if constexpr ((F::flags & kEmbed) != 0) {
      pack_fields(p, v.*f.member);
    } else {
      put_str(p, f.key);
      pack_value<F::flags>(p, v.*f.member);
    }
  });
}

// ---------------------------------------------------------------- decoding

Error bad(std::string what) { return Error::make(ErrorCode::invalid_argument, "malformed message: " + std::move(what)); }

// Field access over one msgpack map. The first problem is kept; every key
// must be read exactly once, so unknown and duplicate keys are errors.
class Fields {
 public:
  explicit Fields(const msgpack::object& map) {
    if (map.type != msgpack::type::MAP) {
      fail("not a map");
      return;
    }
    for (uint32_t i = 0; i < map.via.map.size && !failed(); ++i) {
      const auto& kv = map.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) {
        fail("non-string key");
        break;
      }
      std::string_view key(kv.key.via.str.ptr, kv.key.via.str.size);
      for (const auto& e : entries_)
        if (e.key == key) fail("duplicate key '" + std::string(key.substr(0, 64)) + "'");
      entries_.push_back({key, &kv.val, false});
    }
  }

  const msgpack::object* take(std::string_view key) {
    for (auto& e : entries_)
      if (e.key == key) {
        e.used = true;
        return e.value;
      }
    fail("missing key '" + std::string(key) + "'");
    return nullptr;
  }

  // Reports the first problem, including keys nobody asked for.
  Result<void> finish() {
    if (!error_)
      for (const auto& e : entries_)
        if (!e.used) fail("unknown key '" + std::string(e.key.substr(0, 64)) + "'");
    if (error_) return bad(*error_);
    return ok();
  }
  bool failed() const { return error_.has_value(); }
  void fail(std::string what) {
    if (!error_) error_ = std::move(what);
  }
  const std::string& error() const { return *error_; }

 private:
  struct Entry {
    std::string_view key;
    const msgpack::object* value;
    bool used;
  };
  std::vector<Entry> entries_;
  std::optional<std::string> error_;
};

template <class T>
void read_fields(Fields& in, T& out);

std::optional<std::string_view> as_bytes(const msgpack::object& o, bool text_only) {
  if (o.type == msgpack::type::STR) return std::string_view(o.via.str.ptr, o.via.str.size);
  if (o.type == msgpack::type::BIN && !text_only) return std::string_view(o.via.bin.ptr, o.via.bin.size);
  return std::nullopt;
}

// Reads one value of type M from `o` into `out`; problems go to `in`.
template <unsigned Flags, class M>
void read_object(Fields& in, std::string_view key, const msgpack::object& o, uint64_t bound, M& out) {
  auto type_error = [&](std::string_view what) { in.fail("'" + std::string(key) + "' is not " + std::string(what)); };
  auto range_error = [&] { in.fail("'" + std::string(key) + "' out of range"); };
  if constexpr (std::is_same_v<M, std::string>) {
    auto v = as_bytes(o, (Flags & kText) != 0);
    if (!v) return type_error((Flags & kText) != 0 ? "a string" : "bytes");
    if (v->size() > bound) return in.fail("'" + std::string(key) + "' longer than " + std::to_string(bound) + " bytes");
    out.assign(v->data(), v->size());
  } else if constexpr (std::is_same_v<M, bool>) {
    if (o.type != msgpack::type::BOOLEAN) return type_error("a boolean");
    out = o.via.boolean;
  } else if constexpr (std::is_integral_v<M> && std::is_unsigned_v<M>) {
    if (o.type != msgpack::type::POSITIVE_INTEGER) return type_error("an unsigned integer");
    if (o.via.u64 > std::min<uint64_t>(bound, std::numeric_limits<M>::max())) return range_error();
    out = static_cast<M>(o.via.u64);
  } else if constexpr (std::is_integral_v<M>) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
      if (o.via.u64 > static_cast<uint64_t>(std::numeric_limits<M>::max())) return range_error();
      out = static_cast<M>(o.via.u64);
    } else if (o.type == msgpack::type::NEGATIVE_INTEGER) {
      if (o.via.i64 < std::numeric_limits<M>::min()) return range_error();
      out = static_cast<M>(o.via.i64);
    } else {
      return type_error("an integer");
    }
  } else if constexpr (std::is_same_v<M, std::chrono::milliseconds>) {
    if (o.type != msgpack::type::POSITIVE_INTEGER) return type_error("an unsigned integer");
    if (o.via.u64 > bound) return range_error();
    out = std::chrono::milliseconds(static_cast<int64_t>(o.via.u64));
  } else if constexpr (NamedEnum<M>) {
    auto v = as_bytes(o, true);
    if (!v) return type_error("a string");
    auto parsed = v->size() <= limits::kMaxNameBytes ? schema::EnumNames<M>::parse(*v) : std::nullopt;
    if (!parsed) return in.fail("unknown " + std::string(key) + " '" + std::string(v->substr(0, 64)) + "'");
    out = *parsed;
  } else if constexpr (std::is_same_v<M, EnvList>) {
    if (o.type != msgpack::type::MAP) return type_error("a map");
    if (o.via.map.size > bound) return in.fail("more than " + std::to_string(bound) + " env vars");
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR || kv.val.type != msgpack::type::STR)
        return in.fail("env entries must be strings");
      std::string name(kv.key.via.str.ptr, kv.key.via.str.size);
      for (const auto& e : out)
        if (e.first == name) return in.fail("duplicate env var '" + name.substr(0, 64) + "'");
      out.emplace_back(std::move(name), std::string(kv.val.via.str.ptr, kv.val.via.str.size));
    }
  } else if constexpr (Described<M>) {
    Fields nested(o);
    read_fields(nested, out);
    if (auto r = nested.finish(); !r) in.fail("in '" + std::string(key) + "': " + nested.error());
  } else if constexpr (is_vector<M>::value) {
    if (o.type != msgpack::type::ARRAY) return type_error("an array");
    if (o.via.array.size > bound) return in.fail("'" + std::string(key) + "' has too many entries");
    out.resize(o.via.array.size);
    for (uint32_t i = 0; i < o.via.array.size && !in.failed(); ++i)
      read_object<Flags>(in, key, o.via.array.ptr[i], UINT64_MAX, out[i]);
  } else {
    static_assert(sizeof(M) == 0, "a field type the codec does not know");
  }
}

template <class T>
void read_fields(Fields& in, T& out) {
  for_each_field<T>([&](const auto& f) {
    using F = std::decay_t<decltype(f)>;
    if (in.failed()) return;
    if constexpr ((F::flags & kEmbed) != 0) {
      read_fields(in, out.*f.member);
    } else if (const auto* o = in.take(f.key)) {
      read_object<F::flags>(in, f.key, *o, f.bound, out.*f.member);
    }
  });
}

template <size_t I = 0>
Result<Message> decode_as(std::string_view type, Fields& f) {
  if constexpr (I == std::variant_size_v<Message>) {
    return bad("unknown message type '" + std::string(type.substr(0, 64)) + "'");
  } else {
    using T = std::variant_alternative_t<I, Message>;
    if (schema::Schema<T>::type != type) return decode_as<I + 1>(type, f);
    T m;
    read_fields(f, m);
    if (auto r = f.finish(); !r) return std::move(r).error();
    return Message(std::move(m));
  }
}

// Strings and binaries stay in the payload: only fields read are copied.
bool reference_everything(msgpack::type::object_type, std::size_t, void*) { return true; }

}  // namespace

uint64_t request_id_of(const Message& message) {
  return std::visit(
      [](const auto& m) -> uint64_t {
        if constexpr (requires { m.id; }) return m.id;
        return 0;
      },
      message);
}

std::string_view type_name(const Message& message) {
  return std::visit([](const auto& m) { return schema::Schema<std::decay_t<decltype(m)>>::type; }, message);
}

std::string encode(const Message& message) {
  msgpack::sbuffer buf;
  Packer p(buf);
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        p.pack_map(static_cast<uint32_t>(schema::key_count<T>() + 1));
        put_str(p, "type");
        put_str(p, schema::Schema<T>::type);
        pack_fields(p, m);
      },
      message);
  return std::string(buf.data(), buf.size());
}

Result<Message> decode(std::string_view payload) {
  // Counted before msgpack allocates anything: its own limits are per
  // container, and nesting multiplies them.
  MsgpackScanLimits scan{limits::kMaxDecodeObjects, limits::kMaxDecodeDepth, limits::kMaxDecodeElements};
  if (auto s = scan_msgpack(payload, scan); !s) return std::move(s).error();
  msgpack::unpack_limit limit(limits::kMaxDecodeElements, limits::kMaxDecodeElements, payload.size(), payload.size(),
                              0, limits::kMaxDecodeDepth);
  try {
    size_t off = 0;
    msgpack::object_handle h =
        msgpack::unpack(payload.data(), payload.size(), off, reference_everything, nullptr, limit);
    if (off != payload.size()) return bad("trailing bytes after the message");
    Fields f(h.get());
    std::string type;
    if (const auto* t = f.take("type")) {
      auto v = as_bytes(*t, true);
      if (!v || v->size() > limits::kMaxNameBytes) return bad("'type' is not a name");
      type.assign(v->data(), v->size());
    }
    if (f.failed()) return bad(f.error());
    return decode_as(type, f);
  } catch (const std::exception& e) {
    return bad(e.what());
  }
}

}  // namespace sandbox::proto
