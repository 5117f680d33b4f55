// A bounded concurrent writer (tests, demo, benchmarks): random inserts, updates (including updates
// of TOASTed rows that leave the big value unchanged, and primary-key changes), deletes and
// truncates, on the moved tenant and on other tenants, over the demo schema plus `scratch`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace stampmover::harness {

struct WriterOptions {
  std::string dsn;                                  // Default: none (required): the source
  int64_t tenant = 42;                              // Default: 42
  int64_t other_tenant = 1;                         // Default: 1 (written alongside)
  std::chrono::milliseconds duration{3000};         // Default: 3 s (bounded)
  uint64_t max_transactions = 100'000;              // Default: 100000 (bounded)
  uint32_t seed = 1;                                // Default: 1
  bool truncates = true;                            // Default: true (on the scratch table)
  std::chrono::microseconds pause{0};               // Default: 0 between transactions
};

// Creates `scratch` (tenant_id, id, v; shared by tenants) if missing. Idempotent.
void createScratchTable(const std::string& dsn);

// Runs the writer on its own thread until duration/max_transactions or stop().
class Writer {
 public:
  explicit Writer(WriterOptions options);
  ~Writer();
  void stop();
  uint64_t transactions() const { return txns_.load(); }
  uint64_t errors() const { return errors_.load(); }

 private:
  void run();
  WriterOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> txns_{0};
  std::atomic<uint64_t> errors_{0};
  std::thread thread_;
};

}  // namespace stampmover::harness
