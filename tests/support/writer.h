// The concurrent writer for catch-up tests lives in the harness (the demo uses it too);
// this header keeps the tests' names.
#pragma once

#include "harness/load_writer.h"

namespace stampmover::testing {
using harness::createScratchTable;
using harness::Writer;
using harness::WriterOptions;
}  // namespace stampmover::testing
