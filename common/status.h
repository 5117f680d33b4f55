// The one error idiom of stampmover: a [[nodiscard]] Status / Result<T> whose error carries a
// class the caller acts on (retry, refuse, stop for data loss, cancelled). Library exceptions
// are caught at the adapter that calls the library and turned into a Status there.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace stampmover::common {

// What the caller should do about an error.
enum class ErrorClass {
  kRetryable,  // connection lost, 40001, 40P01, broker down: retry with jittered backoff
  kRefused,    // bad input, config or schema: stop and tell the operator what to fix
  kDataLoss,   // data mismatch or loss detected: stop the migration, alert a human
  kCancelled,  // shutdown requested
  kInternal,   // a bug or an unexpected server answer: stop, report
};

const char* errorClassName(ErrorClass c);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  static Status ok() { return Status(); }
  static Status error(ErrorClass cls, std::string message) {
    Status s;
    s.err_ = Err{cls, std::move(message), {}};
    return s;
  }
  static Status refused(std::string m) { return error(ErrorClass::kRefused, std::move(m)); }
  static Status retryable(std::string m) { return error(ErrorClass::kRetryable, std::move(m)); }
  static Status internal(std::string m) { return error(ErrorClass::kInternal, std::move(m)); }
  static Status dataLoss(std::string m) { return error(ErrorClass::kDataLoss, std::move(m)); }
  static Status cancelled(std::string m) { return error(ErrorClass::kCancelled, std::move(m)); }

  bool isOk() const { return !err_.has_value(); }
  explicit operator bool() const { return isOk(); }
  ErrorClass errorClass() const { return err_ ? err_->cls : ErrorClass::kInternal; }
  const std::string& message() const {
    static const std::string kOk = "ok";
    return err_ ? err_->message : kOk;
  }
  // The SQLSTATE of the server error this status came from ("42704"), or "" when it did not
  // come from a server error (OK, a client-side failure, a lost connection). Callers decide on
  // this, never on message text: messages are translated per lc_messages.
  const std::string& sqlState() const {
    static const std::string kNone;
    return err_ ? err_->sql_state : kNone;
  }
  // Returns a copy that carries `sql_state` (see sqlState()); OK stays OK.
  Status withSqlState(std::string sql_state) const {
    Status s = *this;
    if (s.err_) s.err_->sql_state = std::move(sql_state);
    return s;
  }
  // Returns a copy with another error class, same message and SQLSTATE; OK stays OK.
  Status withClass(ErrorClass cls) const {
    Status s = *this;
    if (s.err_) s.err_->cls = cls;
    return s;
  }
  // Returns a copy whose message is prefixed with `context: ` (class and SQLSTATE kept).
  Status withContext(const std::string& context) const {
    if (isOk()) return *this;
    Status s = *this;
    s.err_->message = context + ": " + err_->message;
    return s;
  }
  // Explicitly ignores a status; the caller must say why in a comment.
  void ignore() const {}

 private:
  struct Err {
    ErrorClass cls;
    std::string message;
    std::string sql_state;  // "" unless a server error produced this status
  };
  std::optional<Err> err_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).isOk()) {
      v_ = Status::internal("Result constructed from an OK status without a value");
    }
  }
  bool isOk() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return isOk(); }
  const Status& status() const {
    static const Status kOk;
    return isOk() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace stampmover::common

// Early-return helpers. They keep error propagation explicit and short.
#define SM_CONCAT_INNER(a, b) a##b
#define SM_CONCAT(a, b) SM_CONCAT_INNER(a, b)
#define SM_RETURN_IF_ERROR(expr)               \
  do {                                         \
    auto sm_status_ = (expr);                  \
    if (!sm_status_.isOk()) return sm_status_; \
  } while (0)
#define SM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.isOk()) return tmp.status();          \
  lhs = std::move(tmp).value()
#define SM_ASSIGN_OR_RETURN(lhs, expr) \
  SM_ASSIGN_OR_RETURN_IMPL(SM_CONCAT(sm_result_, __LINE__), lhs, expr)
