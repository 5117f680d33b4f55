// Subcommands of the stampmover binary that need more than wiring (the demo).
#pragma once

#include <atomic>
#include <cstdint>

struct DemoArgs {
  uint64_t tenant_items = 200'000;  // Default: 200000 rows in the largest table
  uint32_t jobs = 0;                // Default: 0 (auto)
  uint32_t writer_seconds = 10;     // Default: 10 s of concurrent writes during the migration
};

// Starts two local stamps, seeds, copies tenant 42, checks the copy independently, prints the
// report. Returns the process exit code.
int runDemo(const DemoArgs& args, const std::atomic<bool>& cancel);
