// kill -9 of a process in the middle of writing checkpoint batches: after reopening, the
// store holds whole batches only (every record of the last batch agrees) and nothing that
// was acknowledged is lost. Runs several rounds on the same real RocksDB directory.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>

#include "mover/checkpoint_store.h"
#include "tests/support/test_support.h"

using namespace stampmover;

TEST(CheckpointCrash, KillNineMidBatchReopensConsistent) {
  stampmover::testing::TempDir dir;
  std::mt19937 rng(12345);
  for (int round = 0; round < 5; ++round) {
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t pid = fork();
    if (pid == 0) {
      dup2(pipefd[1], STDOUT_FILENO);
      close(pipefd[0]);
      close(pipefd[1]);
      execl(CHECKPOINT_WRITER_BIN, CHECKPOINT_WRITER_BIN, dir.path().c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(pipefd[1]);
    FILE* in = fdopen(pipefd[0], "r");
    ASSERT_NE(in, nullptr);
    const uint64_t kill_after = 20 + rng() % 200;
    uint64_t acks = 0;
    uint64_t last_acked = 0;
    char line[128];
    while (acks < kill_after && std::fgets(line, sizeof line, in)) {
      unsigned long long n = 0;
      if (std::sscanf(line, "acked %llu", &n) == 1) {
        last_acked = n;
        ++acks;
      }
    }
    ASSERT_EQ(acks, kill_after) << "writer stopped early";
    kill(pid, SIGKILL);  // mid-batch: the writer never pauses between batches
    int status = 0;
    waitpid(pid, &status, 0);
    std::fclose(in);
    ASSERT_TRUE(WIFSIGNALED(status));

    auto store = mover::openRocksDbCheckpointStore({dir.path(), false});
    ASSERT_TRUE(store) << store.status().message();
    auto rec = (*store)->loadMigration("crash-test");
    ASSERT_TRUE(rec) << rec.status().message();
    ASSERT_TRUE(rec->has_value());
    uint64_t seq = (*rec)->updated_unix_ms;
    EXPECT_GE(seq, last_acked) << "an acknowledged batch was lost";
    auto chunks = (*store)->loadChunksDone("crash-test");
    ASSERT_TRUE(chunks);
    ASSERT_EQ(chunks->size(), 4u);
    for (const auto& c : *chunks) {
      EXPECT_EQ(c.rows, seq) << "torn batch: chunk " << c.index << " round " << round;
      EXPECT_EQ(c.bytes, seq * 10);
    }
  }
}
