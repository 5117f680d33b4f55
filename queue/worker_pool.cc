// Stub of the WorkerPool (worker_pool.h) so the API can compile against the header; the real
// implementation replaces it.
#include "queue/worker_pool.h"

#include "orchestrator/migrate_job.h"

namespace stampmover::queue {

struct WorkerPool::Impl {
  MoveQueue* queue;
  WorkerPoolOptions options;
};
WorkerPool::WorkerPool(MoveQueue& queue, WorkerPoolOptions options)
    : impl_(std::make_unique<Impl>(Impl{&queue, std::move(options)})) {}
WorkerPool::~WorkerPool() = default;
common::Status WorkerPool::start() {
  return common::Status::internal("internal: worker pool not implemented yet");
}
common::Status WorkerPool::drain(std::chrono::milliseconds) { return common::Status::ok(); }
WorkerPoolStats WorkerPool::stats() const { return {}; }

}  // namespace stampmover::queue
