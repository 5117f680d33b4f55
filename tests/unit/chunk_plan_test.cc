// Chunk planning: CTID block ranges cover every block exactly once, the last is open-ended,
// and tiny tables are one chunk.
#include <gtest/gtest.h>

#include "mover/snapshot_copy.h"

using namespace stampmover::mover;

TEST(ChunkPlan, CoversEveryBlockOnce) {
  TableInfo big;
  big.schema = "public";
  big.name = "big";
  big.block_size = 8192;
  big.heap_bytes = 8192ull * 1000;  // 1000 blocks
  TableInfo small;
  small.schema = "public";
  small.name = "small";
  small.heap_bytes = 0;
  auto plan = planChunks({big, small}, 8192ull * 300);  // 300 blocks per chunk
  ASSERT_EQ(plan.size(), 5u);
  uint64_t next = 0;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(plan[i].table, "public.big");
    EXPECT_EQ(plan[i].index, static_cast<uint32_t>(i));
    EXPECT_EQ(plan[i].start_block, next);
    next = plan[i].end_block;
  }
  EXPECT_EQ(plan[3].end_block, 0u) << "last chunk is open-ended";
  EXPECT_EQ(plan[3].start_block, 900u);
  EXPECT_EQ(plan[4].table, "public.small");
  EXPECT_EQ(plan[4].start_block, 0u);
  EXPECT_EQ(plan[4].end_block, 0u);
}

TEST(ChunkPlan, AutoJobsIsAtLeastOne) { EXPECT_GE(autoJobs(), 1u); }
