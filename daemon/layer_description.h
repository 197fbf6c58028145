// A package layer's description (layers.h): the `.layer` file beside its
// image, and the object beside it in the nodes' shared store
// (layer_share.h): the image's SHA-256 and size, the request, the lock.
// The parser takes bytes from that store, which other hosts write: strict,
// bounded, with a libFuzzer target (fuzz/fuzz_layer_description.cc).
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include <sandbox/result.h>
#include <sandbox/types.h>

namespace sandbox::daemon {

struct LayerDescription {
  LayerInfo info;      // key, language, packages, lock, bytes
  std::string sha256;  // of the image
};
std::string format_layer_description(const LayerDescription& d);
// Strict and bounded (the text may come from another node's store):
// image_corrupt for anything but a description as format_ writes it.
Result<LayerDescription> parse_layer_description(const std::string& key, std::string_view text);
// The largest description either reads or writes.
inline constexpr size_t kMaxLayerDescriptionBytes = 512 << 10;

// Text a description may hold: no control characters.
bool printable_line(std::string_view s);

// The framing both descriptions from a store share (this one and the
// snapshot's): `magic` as the first line, then "TAG VALUE" lines, every
// line ended by a newline. `line` gets each tag and value and answers why
// it refuses them ("" to go on). Returns why the text was refused, or "".
std::string read_tagged_lines(std::string_view text, std::string_view magic,
                              const std::function<std::string(std::string_view tag, std::string_view value)>& line);

}  // namespace sandbox::daemon
