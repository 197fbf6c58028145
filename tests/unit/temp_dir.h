// A directory under /tmp for one test, removed with everything in it.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace sandbox::test {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sandboxd-unit-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  void write(const std::string& name, const std::string& data) const { std::ofstream(path + "/" + name) << data; }
};

}  // namespace sandbox::test
