// JSON log lines and the per-thread move context (see log_context.h).
#include "metrics/log_context.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace stampmover::metrics {

namespace {
thread_local std::string t_move;
thread_local std::string t_tenant;
thread_local std::string t_phase;

void append(spdlog::memory_buf_t& dest, const std::string& s) { dest.append(s.data(), s.data() + s.size()); }

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto t = std::chrono::system_clock::to_time_t(msg.time);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[80];
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    auto level = spdlog::level::to_string_view(msg.level);
    std::string line = std::string("{\"ts\":\"") + ts + "\",\"level\":\"" +
                       std::string(level.data(), level.size()) + "\",\"msg\":\"" +
                       jsonEscape(std::string(msg.payload.data(), msg.payload.size())) + "\"";
    if (!t_move.empty()) line += ",\"move\":\"" + jsonEscape(t_move) + "\"";
    if (!t_tenant.empty()) line += ",\"tenant\":\"" + jsonEscape(t_tenant) + "\"";
    if (!t_phase.empty()) line += ",\"phase\":\"" + jsonEscape(t_phase) + "\"";
    line += "}\n";
    append(dest, line);
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};
}  // namespace

void useJsonLogFormat() { spdlog::default_logger()->set_formatter(std::make_unique<JsonFormatter>()); }

LogContext::LogContext(std::string move_id, std::string tenant, std::string phase)
    : prev_move_(std::move(t_move)), prev_tenant_(std::move(t_tenant)), prev_phase_(std::move(t_phase)) {
  t_move = std::move(move_id);
  t_tenant = std::move(tenant);
  t_phase = std::move(phase);
}

LogContext::~LogContext() {
  t_move = std::move(prev_move_);
  t_tenant = std::move(prev_tenant_);
  t_phase = std::move(prev_phase_);
}

void LogContext::setPhase(const std::string& phase) { t_phase = phase; }

std::string jsonEscape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

}  // namespace stampmover::metrics
