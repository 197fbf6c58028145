#include "common/seccomp_program.h"

#include <sys/mman.h>
#include <unistd.h>

#include "common/unique_fd.h"

namespace sandbox {

Result<std::vector<sock_filter>> export_seccomp_program(scmp_filter_ctx ctx) {
  // libseccomp 2.5 exports to a descriptor only; a memfd holds the program.
  unique_fd mem(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
  if (!mem) return Error::sys("memfd_create");
  if (int rc = seccomp_export_bpf(ctx, mem.get()); rc != 0) return Error::sys("seccomp_export_bpf", {}, -rc);
  off_t size = ::lseek(mem.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0 ||
      size / static_cast<off_t>(sizeof(sock_filter)) > BPF_MAXINSNS)
    return Error::make(ErrorCode::internal, "seccomp program has an unexpected size");
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(mem.get(), program.data(), static_cast<size_t>(size), 0) != size)
    return Error::sys("pread", "seccomp program");
  return program;
}

}  // namespace sandbox
