// Every user-controllable size, count and duration, with the reason for its
// value. Daemon, libclient and agent all check against these; part of the
// public API so that callers can check early too.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sandbox::limits {

// Source code per run: large generated scripts fit, a memory flood does not.
inline constexpr size_t kMaxCodeBytes = 1 << 20;
// Output kept in a result; beyond it the run goes on and the flag is set.
inline constexpr size_t kMaxStdoutBytes = 1 << 20;
inline constexpr size_t kMaxStderrBytes = 100 << 10;
// Environment: enough for real configuration, bounded for the guest's argv area.
inline constexpr size_t kMaxEnvVars = 100;
inline constexpr size_t kMaxEnvNameBytes = 256;
inline constexpr size_t kMaxEnvValueBytes = 4096;
// Timeouts: sub-second runs are allowed; five minutes bounds a VM's life.
inline constexpr uint32_t kMinTimeoutMs = 100;
inline constexpr uint32_t kMaxTimeoutMs = 300'000;
inline constexpr uint32_t kDefaultTimeoutMs = 30'000;
// Guest memory: below 128 MB Python and Node do not start reliably.
inline constexpr uint32_t kMinMemoryMb = 128;
inline constexpr uint32_t kMaxMemoryMb = 2048;
inline constexpr uint32_t kDefaultMemoryMb = 256;
// One frame on the control socket and on the agent channel: the largest
// message is a run (code plus environment) or a result (stdout plus
// stderr); files travel as chunk frames. An oversize frame closes a client
// connection.
inline constexpr size_t kMaxFrameBytes = 2 << 20;
// Output chunk size on the agent channel: small enough to stream promptly.
inline constexpr size_t kOutputChunkBytes = 64 << 10;
// Sessions: idle timeout bounds (a forgotten session must not hold a VM for
// long) and the id's length.
inline constexpr uint32_t kMinSessionIdleMs = 10'000;
inline constexpr uint32_t kMaxSessionIdleMs = 3'600'000;
inline constexpr uint32_t kDefaultSessionIdleMs = 300'000;
inline constexpr size_t kMaxSessionIdBytes = 64;
// Files in sessions: 50 MB fits datasets and build artefacts; chunks of
// 1 MiB (one zstd frame each) keep agent frames well under their limit.
inline constexpr uint64_t kMaxFileBytes = 50ull << 20;
inline constexpr size_t kFileChunkBytes = 1 << 20;
inline constexpr size_t kMaxFileChunks = kMaxFileBytes / kFileChunkBytes + 1;
// A compressed chunk: zstd's worst case for incompressible data is far below this.
inline constexpr size_t kMaxFileChunkWireBytes = kFileChunkBytes + (kFileChunkBytes >> 6);
// A guest path: relative to home, a POSIX NAME_MAX-sized string.
inline constexpr size_t kMaxPathBytes = 255;
// Directory entries one listing returns.
inline constexpr size_t kMaxListEntries = 1000;
// Nesting, entries per container and objects per frame a decoder accepts:
// the deepest message is a session list (list, session, exposed ports,
// port); the largest (a full directory listing) holds about 7,000 objects.
inline constexpr size_t kMaxDecodeDepth = 5;
inline constexpr size_t kMaxDecodeElements = 1024;
inline constexpr size_t kMaxDecodeObjects = 16384;
// Strings that are names, not data (language, error code, kernel release).
inline constexpr size_t kMaxNameBytes = 256;
// Network (SPEC F12, F13): ports a VM may expose, allowlist entries per
// request (a DNS name is at most 253 bytes), denials kept in a result.
inline constexpr size_t kMaxExposedPorts = 10;
inline constexpr size_t kMaxAllowedDomains = 64;
inline constexpr size_t kMaxDomainBytes = 253;
inline constexpr size_t kMaxNetworkDenials = 32;
// Packages per request (SPEC F14): a real project's direct dependencies,
// and a bound on what one builder VM installs; one entry ("name[extras]
// specifier") is a PyPI or npm name (at most 214 bytes) plus a version.
inline constexpr size_t kMaxPackages = 50;
inline constexpr size_t kMaxPackageSpecBytes = 256;
// Error messages travelling to clients.
inline constexpr size_t kMaxMessageBytes = 64 << 10;

}  // namespace sandbox::limits
