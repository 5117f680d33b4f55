// Failpoints for fault-injection tests: named places in the code that, when the environment
// variable STAMPMOVER_FAILPOINTS names them, sleep or fail. Unset in production: one lookup in
// a map built once, then nothing.
//   STAMPMOVER_FAILPOINTS="cutover.after_fence=sleep:3000,cutover.before_flip=error"
// Actions: sleep:<ms>, error, kill (SIGKILL to the process: the crash tests' kill -9).
// Names (tests/integration/chaos_test.cc kills the worker at each): cutover.<step> for the
// steps of the forward window (before_freeze, after_freeze, after_fence, after_drain,
// after_recheck, after_sequences, before_flip, after_flip), cutover.reverse.<step> for the
// same steps of the reverse cutover of a rollback, migrate.* around them, teardown.* for the
// steps of finalize and rollback.
#pragma once

#include <string_view>

#include "common/status.h"

namespace stampmover::common {

// Returns OK, after sleeping when configured with sleep:<ms>; an error (kRetryable, naming the
// failpoint) when configured with `error`. Thread-safe.
Status failpoint(std::string_view name);

}  // namespace stampmover::common
