// Failpoints for fault-injection tests: named places in the code that, when the environment
// variable STAMPMOVER_FAILPOINTS names them, sleep or fail. Unset in production: one lookup in
// a map built once, then nothing.
//   STAMPMOVER_FAILPOINTS="cutover.after_fence=sleep:3000,cutover.before_flip=error"
// Actions: sleep:<ms>, error, kill (SIGKILL to the process: the crash tests' kill -9).
#pragma once

#include <string_view>

#include "common/status.h"

namespace stampmover::common {

// Returns OK, after sleeping when configured with sleep:<ms>; an error (kRetryable, naming the
// failpoint) when configured with `error`. Thread-safe.
Status failpoint(std::string_view name);

}  // namespace stampmover::common
