// Failpoints: see failpoint.h.
#include "common/failpoint.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

namespace stampmover::common {

namespace {

const std::map<std::string, std::string, std::less<>>& configured() {
  static const auto* points = [] {
    auto* m = new std::map<std::string, std::string, std::less<>>();
    const char* env = std::getenv("STAMPMOVER_FAILPOINTS");
    if (env == nullptr) return m;
    std::string all(env);
    size_t pos = 0;
    while (pos < all.size()) {
      size_t comma = all.find(',', pos);
      std::string item = all.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      size_t eq = item.find('=');
      if (eq != std::string::npos) (*m)[item.substr(0, eq)] = item.substr(eq + 1);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    return m;
  }();
  return *points;
}

}  // namespace

Status failpoint(std::string_view name) {
  const auto& points = configured();
  if (points.empty()) return Status::ok();
  auto it = points.find(name);
  if (it == points.end()) return Status::ok();
  const std::string& action = it->second;
  if (action == "kill") {
    // The crash tests' kill -9 at an exact place: no destructor, no flush, no cleanup.
    std::fprintf(stderr, "failpoint %.*s: kill\n", static_cast<int>(name.size()), name.data());
    std::fflush(stderr);
    ::raise(SIGKILL);
  }
  if (action.rfind("sleep:", 0) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(action.c_str() + 6)));
    return Status::ok();
  }
  return Status::retryable("failpoint " + std::string(name) + " triggered");
}

}  // namespace stampmover::common
