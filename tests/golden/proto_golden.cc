// proto_golden OUTDIR: writes each message of tests/golden/messages.h as
// one frame (length prefix and msgpack payload, from the C++ codec) to
// OUTDIR/<name>.bin. Run once when the protocol changes; the files are
// checked in under python/tests/golden/ and both test suites read them.
#include <cstdio>
#include <fstream>
#include <string>

#include "common/framing.h"
#include "tests/golden/messages.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: proto_golden OUTDIR\n");
    return 2;
  }
  std::string dir = argv[1];
  for (const auto& g : sandbox::golden::messages()) {
    std::string path = dir + "/" + g.name + ".bin";
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    std::string bytes = sandbox::frame_message(g.message);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "proto_golden: cannot write '%s'\n", path.c_str());
      return 1;
    }
  }
  return 0;
}
