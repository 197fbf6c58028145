// Unit suite entry point. The core under test logs as it would in the
// daemon; only errors are worth showing here.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "daemon/log.h"

int main(int argc, char** argv) {
  sandbox::daemon::set_log_level(sandbox::daemon::LogLevel::error);
  return doctest::Context(argc, argv).run();
}
