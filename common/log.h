// Logging setup: spdlog to stderr, one line per event, with a level chosen on the command line.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace stampmover::common {

// Configures the default logger: stderr, "[time] [level] message". `level` is one of
// trace, debug, info, warn, error. Not thread-safe: call once at startup.
void setupLogging(const std::string& level);

// Milliseconds since the Unix epoch (wall clock), for records and reports.
uint64_t nowUnixMs();

}  // namespace stampmover::common
