// Child process for the checkpoint crash test: writes synced batches forever, each batch
// setting a migration record and four chunk records to the same sequence number, and prints
// "acked <n>" after each write returns. The parent kills it with SIGKILL at a random moment.
#include <cstdio>
#include <string>

#include "mover/checkpoint_store.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: checkpoint_writer <state-dir>\n");
    return 2;
  }
  auto store = stampmover::mover::openRocksDbCheckpointStore({argv[1], true});
  if (!store) {
    std::fprintf(stderr, "open: %s\n", store.status().message().c_str());
    return 1;
  }
  stampmover::mover::MigrationRecord rec;
  rec.id = "crash-test";
  rec.tenant = "1";
  rec.phase = "copying";
  for (uint64_t n = 1;; ++n) {
    stampmover::mover::CheckpointBatch b;
    rec.updated_unix_ms = n;
    b.putMigration(rec);
    for (uint32_t c = 0; c < 4; ++c) {
      // A wide value makes each batch span several WAL writes.
      b.putChunkDone(rec.id, {"public.t" + std::string(200, 'x'), c, n, n * 10});
    }
    auto st = (*store)->write(b);
    if (!st.isOk()) {
      std::fprintf(stderr, "write: %s\n", st.message().c_str());
      return 1;
    }
    std::printf("acked %llu\n", static_cast<unsigned long long>(n));
    std::fflush(stdout);
  }
}
