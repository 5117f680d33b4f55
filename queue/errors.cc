// Stable error codes of the queue (move_queue.h) and their HTTP statuses: one place, so the API
// and the CLI agree on what a refusal means.
#include <array>
#include <string_view>

#include "queue/move_queue.h"

namespace stampmover::queue {
namespace {

struct CodeStatus {
  std::string_view code;
  int http;
};
constexpr std::array<CodeStatus, 9> kCodes{{
    {ErrorCodes::kNotFound, 404},
    {ErrorCodes::kUnknownStamp, 422},
    {ErrorCodes::kSameStamp, 422},
    {ErrorCodes::kInvalidArgument, 400},
    {ErrorCodes::kTenantBusy, 409},
    {ErrorCodes::kIllegalTransition, 409},
    {ErrorCodes::kLeaseLost, 409},
    {ErrorCodes::kUnavailable, 503},
    {ErrorCodes::kInternal, 500},
}};

// The known code that prefixes `message` ("code: ..."), or "".
std::string_view prefixCode(const std::string& message) {
  for (const auto& c : kCodes) {
    if (message.size() > c.code.size() + 1 && message.compare(0, c.code.size(), c.code) == 0 &&
        message[c.code.size()] == ':') {
      return c.code;
    }
  }
  return {};
}

}  // namespace

std::string errorCode(const common::Status& s) {
  if (s.isOk()) return "";
  std::string_view code = prefixCode(s.message());
  if (!code.empty()) return std::string(code);
  return s.errorClass() == common::ErrorClass::kRetryable ? ErrorCodes::kUnavailable
                                                          : ErrorCodes::kInternal;
}

std::string errorText(const common::Status& s) {
  std::string_view code = prefixCode(s.message());
  if (code.empty()) return s.message();
  std::string rest = s.message().substr(code.size() + 1);
  if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
  return rest;
}

int httpStatusFor(const common::Status& s) {
  if (s.isOk()) return 200;
  std::string code = errorCode(s);
  for (const auto& c : kCodes) {
    if (c.code == code) return c.http;
  }
  return 500;
}

}  // namespace stampmover::queue
