// Logging setup: see log.h.
#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <chrono>

namespace stampmover::common {

void setupLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("stampmover");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

uint64_t nowUnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace stampmover::common
