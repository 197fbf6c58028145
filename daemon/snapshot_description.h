// A snapshot template's description in the nodes' shared store
// (snapshot_share.h): what the template is (its key, the fingerprint of
// everything it depends on, language, memory, package layer) and, per
// file, its size and SHA-256 as saved, and how it is stored (raw, or
// compressed with zstd) with the stored size. The parser takes bytes that
// other hosts wrote: strict, bounded, with a libFuzzer target
// (fuzz/fuzz_snapshot_description.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <sandbox/result.h>

#include <sandbox/limits.h>

#include "common/protocol.h"

namespace sandbox::daemon {

enum class SnapshotEncoding : uint8_t { raw, zstd };

struct SnapshotFile {
  uint64_t bytes = 0;         // as saved (the RAM file: the guest's memory size)
  std::string sha256;         // of those bytes
  SnapshotEncoding encoding = SnapshotEncoding::raw;
  uint64_t stored_bytes = 0;  // of the object in the store
};

struct SnapshotDescription {
  std::string key;
  std::string fingerprint;
  Language language = Language::python;
  uint32_t memory_mb = 0;
  std::string layer;  // a package layer's identity, empty for none
  SnapshotFile state, ram;
};

std::string format_snapshot_description(const SnapshotDescription& d);
// image_corrupt for anything but a description as format_ writes it.
Result<SnapshotDescription> parse_snapshot_description(std::string_view text);
// A description is a few lines: anything longer is not one.
inline constexpr size_t kMaxSnapshotDescriptionBytes = 4096;
// Keys, fingerprints and layer identities: short, no white space.
inline constexpr size_t kMaxSnapshotTokenBytes = 256;

}  // namespace sandbox::daemon
