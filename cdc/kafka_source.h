// KafkaDebeziumSource: a change source over Debezium's change topics. Partitions are assigned
// explicitly (rd_kafka_assign: no consumer group, no rebalancing, nothing committed to Kafka);
// the caller gives the start offsets (from the destination's offsets table) and stores each
// partition's next offset in the same destination transaction as the rows (committedOffsets()).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cdc/change_source.h"
#include "cdc/debezium_envelope.h"
#include "common/kafka.h"

namespace stampmover::cdc {

// One partition of one topic and an offset in it.
struct PartitionOffset {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;  // the next offset to read (Kafka's convention for committed offsets)
  bool operator==(const PartitionOffset&) const = default;
};

// Read from the partition's first retained offset (a partition with no stored offset).
inline constexpr int64_t kOffsetBeginning = -2;  // RD_KAFKA_OFFSET_BEGINNING

enum class BadEventPolicy : uint8_t {
  kStop,        // next() fails naming topic, partition, offset and reason
  kDeadLetter,  // the event is appended to dead_letter_path (JSON line) and skipped
};

struct KafkaSourceOptions {
  // librdkafka properties (bootstrap.servers, security.protocol, sasl.*, ssl.*): passed as
  // they are, after the ones this source sets itself (a caller may not re-enable auto commit).
  std::map<std::string, std::string> kafka;  // Default: empty (bootstrap.servers required)
  // Partitions to read and where to start; every partition of every change topic must be
  // listed (partitionsOf() lists them). Default: none (required).
  std::vector<PartitionOffset> start;
  // Bytes librdkafka may prefetch over all partitions together (queued.max.messages.kbytes:
  // librdkafka 2.0.2 applies it to the one consumer queue every partition feeds). Default: 64 MiB.
  size_t max_buffered_bytes = 64u << 20;
  // Bytes of records decoded ahead of next() by the source's consumer thread (an estimate: two
  // bytes per byte of record value plus a fixed overhead per record); the thread waits while
  // the queue holds this much. Default: 16 MiB.
  size_t max_decoded_bytes = 16u << 20;
  // Synthetic position of the first event handed out (see "Positions" below): give a value
  // above the destination origin's progress so positions never go backwards. Default: 1.
  uint64_t first_position = 1;
  BadEventPolicy on_bad_event = BadEventPolicy::kStop;  // Default: stop
  std::string dead_letter_path;                         // Default: none (kDeadLetter needs it)
  // Brokers unreachable (no message, only transport errors) this long: next() returns
  // kRetryable. librdkafka reconnects with its own jittered backoff meanwhile.
  std::chrono::milliseconds give_up_after{60'000};      // Default: 60 s
  std::chrono::milliseconds reconnect_backoff{100};     // Default: 100 ms (reconnect.backoff.ms)
  std::chrono::milliseconds reconnect_backoff_max{5'000};  // Default: 5 s
};

// What status shows about the brokers: the last error and since when they fail.
struct KafkaHealth {
  uint64_t errors = 0;                // broker/transport errors seen since start
  std::string last_error;             // "" when none yet
  bool failing = false;               // the last thing heard was an error, not a message
  std::chrono::steady_clock::time_point failing_since{};
};

struct KafkaSourceStats {
  uint64_t messages = 0;    // records consumed
  uint64_t changes = 0;     // row changes and truncates handed out
  uint64_t skipped = 0;     // other tenants' rows, tables not moved
  uint64_t tombstones = 0;
  uint64_t bad_events = 0;  // dead-lettered
  uint64_t bytes = 0;       // record value bytes consumed
};

// Positions. Kafka has offsets per partition, not one ordered log, and source.lsn is not
// monotonic across partitions, so the ChangeEvent positions this source hands out are
// synthetic: every record that yields events is one source "transaction" (Begin, [Relation],
// Change or Message, Commit) whose final/commit/end LSN is a counter starting at
// options.first_position and rising by one per record. The applier records that counter in its
// replication origin like an LSN; what restarts the stream are the offsets: committedOffsets()
// (stored in the same destination transaction) and, after acknowledge(p), durableOffsets()
// (the offsets as of position p, for the local checkpoint). acknowledge() commits nothing to
// Kafka. Per-key order holds within a partition; records of different partitions interleave in
// arrival order, which is safe because apply is idempotent per key and a key lives in one
// partition (a primary-key change is a delete of the old key and a create of the new one).
//
// Threads: a consumer thread owned by the source polls librdkafka and decodes records into a
// queue (bounded by max_decoded_bytes), in the order librdkafka returns them; next() takes them
// from there in that order and does all the bookkeeping (positions, offsets, dead letters), so
// offsets, errors and bad events surface exactly where they would if next() decoded each
// record itself. The destructor stops and joins the thread.
//
// Memory: librdkafka's prefetch queue (bounded by max_buffered_bytes), the decoded queue
// (max_decoded_bytes) and one record's events; the position->offsets map kept until
// acknowledge() grows with unacknowledged records.
//
// Not thread-safe, except health() and stats(), which any thread may call: one thread calls
// next(), the applier (whose commit callback reads committedOffsets()) and acknowledge().
class KafkaDebeziumSource final : public ChangeSource {
 public:
  // Creates the consumer and assigns options.start. Errors: kRefused (bad property, no
  // bootstrap.servers, no partitions, dead-letter mode without a path), kInternal otherwise.
  // The decoder is owned by the source.
  static common::Result<std::unique_ptr<KafkaDebeziumSource>> open(KafkaSourceOptions options,
                                                                   DebeziumDecoder decoder);
  ~KafkaDebeziumSource() override;

  // Next event, or nullopt when none arrived within `timeout` (broker errors in the meantime
  // are recorded in health(), and retried by librdkafka). Errors: kDataLoss when a start offset
  // is no longer retained (auto.offset.reset=error); kRetryable when brokers have been
  // unreachable for give_up_after; a bad event under kStop: the decoder's class, the message
  // naming topic, partition, offset and reason; kInternal for a failed dead-letter write.
  common::Result<std::optional<common::ChangeEvent>> next(std::chrono::milliseconds timeout) override;

  // Records that every event up to position `flushed` is durable at the destination
  // (durableOffsets() moves there). Nothing is sent to Kafka.
  common::Status acknowledge(common::Lsn flushed) override;

  // Next offset of every assigned partition, counting every record whose events were all handed
  // out (and every record skipped): exactly what a destination transaction committed now, inside
  // the applier's commit callback, contains. Partitions not read yet keep their start offset.
  std::vector<PartitionOffset> committedOffsets() const;
  // True when every partition of `ends` has been handed out up to its offset (committedOffsets()
  // at or past it) and no event is pending: the drain's end (see connect_offsets.h).
  bool reached(const std::vector<PartitionOffset>& ends) const;
  // The offsets as of the last acknowledged position.
  std::vector<PartitionOffset> durableOffsets() const;
  // Position of the last event handed out (the applier's committed position is at most this).
  common::Lsn position() const { return common::Lsn(next_position_ - 1); }
  // True when every assigned partition has reported end-of-partition since its last record and
  // no event is pending: the stream is caught up with what the brokers hold.
  bool caughtUp() const;

  // Records between each assigned partition's next offset (committedOffsets()) and its end as
  // last reported by the brokers (cached from fetch answers: no request), summed. Approximate
  // while fetches are in flight; 0 when caught up.
  uint64_t lagRecords() const;

  // Copies, taken under a lock: thread-safe.
  KafkaHealth health() const;
  KafkaSourceStats stats() const;

  // The end (high watermark: the offset the next record will get) of each of `partitions`, asked
  // of each partition's leader now (a ListOffsets request each, up to `timeout`), in the order
  // given. A record produced after this call returns gets an offset at or past the value
  // returned. Errors: kRetryable (brokers unreachable or a leader unknown).
  static common::Result<std::vector<PartitionOffset>> endOffsets(
      const std::map<std::string, std::string>& kafka, const std::vector<PartitionOffset>& partitions,
      std::chrono::milliseconds timeout);
  // The same on an existing client (no new connection).
  static common::Result<std::vector<PartitionOffset>> endOffsetsOn(
      rd_kafka_t* rk, const std::vector<PartitionOffset>& partitions, std::chrono::milliseconds timeout);

  // Partitions of `topics` as the brokers describe them (metadata request, up to `timeout`),
  // with offset kOffsetBeginning. Errors: kRetryable (brokers unreachable), kRefused (a topic
  // does not exist).

  static common::Result<std::vector<PartitionOffset>> partitionsOf(
      const std::map<std::string, std::string>& kafka, const std::vector<std::string>& topics,
      std::chrono::milliseconds timeout);

  // The librdkafka fetch settings open() sets (a caller's properties override them); see
  // kafka_source.cc for why each value. Exposed so the benchmark's bare consumer uses the same.
  static std::map<std::string, std::string> fetchSettings();

 private:
  using PartKey = std::pair<std::string, int32_t>;
  // One thing the consumer thread saw, in librdkafka's order.
  struct Polled {
    enum class Kind : uint8_t { kRecord, kEof, kFatal } kind = Kind::kRecord;
    PartKey part;
    int64_t offset = 0;
    size_t value_bytes = 0;
    size_t cost = 0;  // what it counts against max_decoded_bytes
    common::Result<DebeziumRecord> record = DebeziumRecord{};  // kRecord: decoded, or why not
    common::KafkaMessage message;  // kRecord that failed to decode: kept for deadLetter()
    common::Status fatal;          // kFatal: every later next() returns it
  };

  KafkaDebeziumSource(KafkaSourceOptions options, DebeziumDecoder decoder);
  static void onError(rd_kafka_t* rk, int err, const char* reason, void* opaque);
  void consumeLoop();
  // Turns one message into what the consumer thread queues (decoding it); nullopt for a
  // transient error (recorded in health()).
  std::optional<Polled> poll(common::KafkaMessage msg);
  common::Status handleRecord(Polled& p);
  common::Status deadLetter(const rd_kafka_message_t* msg, const std::string& reason);
  void noteError(const std::string& what);

  KafkaSourceOptions options_;
  DebeziumDecoder decoder_;  // used by the consumer thread only
  common::KafkaHandle rk_;
  // The decoded queue between the consumer thread and next().
  mutable std::mutex queue_mu_;
  std::condition_variable queue_has_items_;
  std::condition_variable queue_has_room_;
  std::deque<Polled> queue_;
  size_t queued_cost_ = 0;
  bool stop_ = false;  // set by the destructor
  std::thread consumer_;
  std::deque<common::ChangeEvent> pending_;
  // Offset to commit once pending_ is empty (the record whose events are queued).
  std::optional<std::pair<PartKey, int64_t>> pending_offset_;
  std::map<PartKey, int64_t> committed_;  // next offsets of records fully handed out
  std::map<PartKey, int64_t> durable_;    // as of the last acknowledged position
  std::deque<std::pair<uint64_t, std::pair<PartKey, int64_t>>> unacked_;  // position -> offset
  std::set<PartKey> at_eof_;
  std::set<uint32_t> relations_sent_;
  uint64_t next_position_ = 1;
  mutable std::mutex observe_mu_;  // guards health_ and stats_
  KafkaHealth health_;
  KafkaSourceStats stats_;
  std::ofstream dead_letter_;
  common::Status fatal_;  // a fatal librdkafka error: every later next() returns it
};

}  // namespace stampmover::cdc
