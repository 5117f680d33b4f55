// KafkaDebeziumSource over librdkafka's consumer API with explicit assignment: a consumer thread
// polls and decodes records into a bounded queue; next() turns them into events in order, and
// offsets advance only as those events are handed out.
#include "cdc/kafka_source.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <thread>

namespace stampmover::cdc {

using common::ChangeEvent;
using common::Result;
using common::Status;

namespace {

// How long the consumer thread waits in one poll; also how soon it sees the destructor's stop.
constexpr int kPollMs = 50;
// Messages the consumer thread takes from librdkafka at once (decoded as the queue has room:
// beyond max_decoded_bytes it holds at most this many undecoded messages).
constexpr size_t kPollBatch = 64;
// What a queued record counts against max_decoded_bytes besides twice its value's size.
constexpr size_t kRecordOverhead = 512;

// Builds a consumer configuration: ours first, then the caller's (never overriding the ones
// that keep offsets out of Kafka).
Result<common::KafkaConf> makeConf(const std::map<std::string, std::string>& mine,
                                   const std::map<std::string, std::string>& theirs) {
  static const std::set<std::string> kLocked = {"enable.auto.commit", "enable.auto.offset.store",
                                                "auto.offset.reset"};
  common::KafkaConf conf(rd_kafka_conf_new());
  char err[512];
  auto set = [&](const std::string& k, const std::string& v) -> Status {
    if (rd_kafka_conf_set(conf.get(), k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return Status::refused("kafka property " + k + ": " + err);
    return Status::ok();
  };
  for (const auto& [k, v] : mine) SM_RETURN_IF_ERROR(set(k, v));
  for (const auto& [k, v] : theirs) {
    if (kLocked.count(k) != 0) {
      if (mine.count(k) && mine.at(k) == v) continue;
      return Status::refused("kafka property " + k + " is managed by stampmover (offsets live at "
                             "the destination); remove it from the Kafka configuration");
    }
    SM_RETURN_IF_ERROR(set(k, v));
  }
  return conf;
}

}  // namespace

KafkaDebeziumSource::KafkaDebeziumSource(KafkaSourceOptions options, DebeziumDecoder decoder)
    : options_(std::move(options)), decoder_(std::move(decoder)) {}

void KafkaDebeziumSource::onError(rd_kafka_t* /*rk*/, int err, const char* reason, void* opaque) {
  auto* self = static_cast<KafkaDebeziumSource*>(opaque);
  if (self == nullptr) return;
  std::string line;
  {
    std::lock_guard<std::mutex> lk(self->observe_mu_);
    KafkaHealth& health = self->health_;
    health.errors++;
    health.last_error = std::string(rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(err))) +
                        ": " + (reason ? reason : "");
    if (!health.failing) {
      health.failing = true;
      health.failing_since = std::chrono::steady_clock::now();
    }
    line = health.last_error;
  }
  spdlog::warn("kafka: {}", line);
}

KafkaHealth KafkaDebeziumSource::health() const {
  std::lock_guard<std::mutex> lk(observe_mu_);
  return health_;
}

KafkaSourceStats KafkaDebeziumSource::stats() const {
  std::lock_guard<std::mutex> lk(observe_mu_);
  return stats_;
}

KafkaDebeziumSource::~KafkaDebeziumSource() {
  if (consumer_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(queue_mu_);
      stop_ = true;
    }
    queue_has_room_.notify_all();
    consumer_.join();  // within one poll (kPollMs)
  }
  // Queued messages (kept for dead letters) go back to librdkafka before the consumer closes.
  queue_.clear();
  if (rk_) {
    // Best effort: with manual assignment there is nothing to commit or hand back.
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_.get());
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) spdlog::debug("kafka close: {}", rd_kafka_err2str(err));
  }
}

std::map<std::string, std::string> KafkaDebeziumSource::fetchSettings() {
  return {
      // librdkafka's maximum, so that only queued.max.messages.kbytes (max_buffered_bytes)
      // bounds the prefetch. A count makes the fetchers stop whenever that many records wait
      // (over every partition: their queues feed the one consumer queue) and resume only at
      // their broker thread's next wakeup (up to 1 s in 2.0.2): measured 1000 here cost 20x,
      // and librdkafka's default 100000 (~50 MB of Debezium records) cost a 153 MB backlog
      // 2.31 s instead of 1.64 s to consume and decode.
      {"queued.min.messages", "10000000"},
      // How long a broker holds a fetch that finds no new record (librdkafka's default 500).
      // A record produced meanwhile is returned at once (fetch.min.bytes 1), so this only
      // bounds how late an idle partition reports its end (caughtUp(), --until-caught-up); at
      // 100 ms an idle consumer sends each leader ten small requests a second.
      {"fetch.wait.max.ms", "100"},
  };
}

Result<std::unique_ptr<KafkaDebeziumSource>> KafkaDebeziumSource::open(KafkaSourceOptions options,
                                                                        DebeziumDecoder decoder) {
  if (options.kafka.count("bootstrap.servers") == 0)
    return Status::refused("kafka configuration lacks bootstrap.servers");
  if (options.start.empty()) return Status::refused("kafka source: no partitions to read");
  if (options.on_bad_event == BadEventPolicy::kDeadLetter && options.dead_letter_path.empty())
    return Status::refused("--on-bad-event dead-letter needs a file");
  std::unique_ptr<KafkaDebeziumSource> src(new KafkaDebeziumSource(std::move(options), std::move(decoder)));
  auto& o = src->options_;
  src->next_position_ = std::max<uint64_t>(o.first_position, 1);
  if (o.on_bad_event == BadEventPolicy::kDeadLetter) {
    src->dead_letter_.open(o.dead_letter_path, std::ios::app);
    if (!src->dead_letter_) return Status::refused("cannot open dead-letter file " + o.dead_letter_path);
  }
  // librdkafka 2.0.2 forwards every partition's fetch queue to the one consumer queue and
  // compares queued.max.messages.kbytes with that queue's total, so the limit is the budget of
  // all partitions together. Split per partition (as before), every fetcher stopped once the
  // shared queue passed one partition's share and resumed only at its broker thread's next
  // wakeup (up to 1 s): measured 14k records/s where a bare consumer read 130k.
  const size_t queue_kb = std::max<size_t>(1, o.max_buffered_bytes / 1024);
  std::map<std::string, std::string> mine = {
      // A group id is needed for the consumer API but no group is joined: assign() only.
      {"group.id", "stampmover"},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      // A start offset that retention removed is data loss, never a silent jump.
      {"auto.offset.reset", "error"},
      {"enable.partition.eof", "true"},
      {"queued.max.messages.kbytes", std::to_string(queue_kb)},
      {"fetch.message.max.bytes", std::to_string(std::min<size_t>(queue_kb * 1024, 1u << 20))},
      // One fetch response per broker may be in flight on top of the queue: a quarter of the
      // budget each (librdkafka's default is 50 MiB per broker whatever the budget).
      {"fetch.max.bytes", std::to_string(std::clamp<size_t>(queue_kb * 1024 / 4, 1u << 20, 50u << 20))},
      {"reconnect.backoff.ms", std::to_string(o.reconnect_backoff.count())},
      {"reconnect.backoff.max.ms", std::to_string(o.reconnect_backoff_max.count())},
  };
  for (const auto& [k, v] : fetchSettings()) mine.emplace(k, v);
  SM_ASSIGN_OR_RETURN(common::KafkaConf conf, makeConf(mine, o.kafka));
  rd_kafka_conf_set_error_cb(conf.get(), onError);
  rd_kafka_conf_set_opaque(conf.get(), src.get());
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err);
  if (rk == nullptr) return Status::refused(std::string("kafka consumer: ") + err);
  conf.release();  // owned by rk now
  src->rk_.reset(rk);
  rd_kafka_poll_set_consumer(rk);
  // Leaders first: a partition assigned before its leader is known waits for librdkafka's
  // offset-query retry timer (500 ms in 2.0.2) before its first fetch. One metadata request
  // for our topics avoids that; if it fails (brokers down) assign() goes on and librdkafka
  // retries by itself, as before.
  {
    using Topic = std::unique_ptr<rd_kafka_topic_t, decltype(&rd_kafka_topic_destroy)>;
    std::vector<Topic> handles;
    std::set<std::string> names;
    for (const auto& p : o.start) names.insert(p.topic);
    for (const auto& t : names) handles.emplace_back(rd_kafka_topic_new(rk, t.c_str(), nullptr), rd_kafka_topic_destroy);
    const rd_kafka_metadata_t* md = nullptr;
    rd_kafka_resp_err_t merr = rd_kafka_metadata(rk, 0, nullptr, &md, 2000);
    if (merr == RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_metadata_destroy(md);
    } else {
      spdlog::debug("kafka metadata before assign: {}", rd_kafka_err2str(merr));
    }
  }
  common::KafkaTopicPartitionList list(rd_kafka_topic_partition_list_new(static_cast<int>(o.start.size())));
  for (const auto& p : o.start) {
    rd_kafka_topic_partition_list_add(list.get(), p.topic.c_str(), p.partition)->offset = p.offset;
    src->committed_[{p.topic, p.partition}] = p.offset;
    src->durable_[{p.topic, p.partition}] = p.offset;
  }
  rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, list.get());
  if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Status::internal(std::string("kafka assign: ") + rd_kafka_err2str(aerr));
  KafkaDebeziumSource* self = src.get();
  src->consumer_ = std::thread([self] { self->consumeLoop(); });
  return src;
}

void KafkaDebeziumSource::noteError(const std::string& what) {
  onError(nullptr, RD_KAFKA_RESP_ERR__FAIL, what.c_str(), this);
}

void KafkaDebeziumSource::consumeLoop() {
  common::KafkaQueue queue(rd_kafka_queue_get_consumer(rk_.get()));
  std::vector<rd_kafka_message_t*> taken(kPollBatch);
  size_t carried = 0;  // messages taken from librdkafka but not decoded yet (no room then)
  size_t next_carried = 0;
  std::vector<Polled> batch;
  while (true) {
    size_t room = 0;  // of max_decoded_bytes: decoding stops once the batch has used this much
    {
      std::unique_lock<std::mutex> lk(queue_mu_);
      queue_has_room_.wait(lk, [&] { return stop_ || queued_cost_ < options_.max_decoded_bytes; });
      if (stop_) break;
      room = options_.max_decoded_bytes - queued_cost_;
    }
    if (next_carried == carried) {
      // What librdkafka holds now, without waiting; else one message, waiting up to kPollMs.
      // (rd_kafka_consume_batch_queue waits for a full batch or its timeout, so it is only
      // asked for what is already there.)
      next_carried = 0;
      ssize_t n = rd_kafka_consume_batch_queue(queue.get(), 0, taken.data(), taken.size());
      if (n <= 0) {
        rd_kafka_message_t* one = rd_kafka_consumer_poll(rk_.get(), kPollMs);
        n = one != nullptr ? 1 : 0;
        taken[0] = one;
      }
      carried = static_cast<size_t>(n);
    }
    bool fatal = false;
    char errstr[512];
    if (rd_kafka_fatal_error(rk_.get(), errstr, sizeof errstr) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      Polled f;
      f.kind = Polled::Kind::kFatal;
      f.fatal = Status::internal(std::string("kafka fatal error: ") + errstr);
      batch.push_back(std::move(f));
      fatal = true;
    }
    size_t used = 0;
    while (!fatal && next_carried < carried && used < room) {
      common::KafkaMessage msg(taken[next_carried]);
      taken[next_carried++] = nullptr;
      std::optional<Polled> p = poll(std::move(msg));
      if (!p) continue;
      fatal = p->kind == Polled::Kind::kFatal;
      used += p->cost;
      batch.push_back(std::move(*p));
    }
    if (batch.empty()) continue;
    {
      std::lock_guard<std::mutex> lk(queue_mu_);
      for (auto& p : batch) {
        queued_cost_ += p.cost;
        queue_.push_back(std::move(p));
      }
    }
    batch.clear();
    queue_has_items_.notify_one();
    if (fatal) break;  // librdkafka stops serving this consumer; next() reports why
  }
  for (size_t i = next_carried; i < carried; ++i) rd_kafka_message_destroy(taken[i]);
}

std::optional<KafkaDebeziumSource::Polled> KafkaDebeziumSource::poll(common::KafkaMessage msg) {
  const std::string topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : "";
  Polled p;
  p.part = {topic, msg->partition};
  p.cost = sizeof(Polled);
  if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    std::lock_guard<std::mutex> lk(observe_mu_);
    health_.failing = false;
    p.kind = Polled::Kind::kEof;
    return p;
  }
  if (msg->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
      msg->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
    p.kind = Polled::Kind::kFatal;
    p.fatal = Status::dataLoss(
        "kafka topic " + std::string(msg->rkt ? rd_kafka_topic_name(msg->rkt) : "?") +
        " partition " + std::to_string(msg->partition) +
        ": the stored offset is no longer retained (" + rd_kafka_message_errstr(msg.get()) +
        "); changes were lost: start the migration over with a new snapshot");
    return p;
  }
  if (msg->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
      msg->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
      msg->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
    p.kind = Polled::Kind::kFatal;
    p.fatal = Status::refused("kafka: " + std::string(rd_kafka_message_errstr(msg.get())) +
                              " (topic " +
                              std::string(msg->rkt ? rd_kafka_topic_name(msg->rkt) : "?") +
                              "): check --topic-prefix and the connector");
    return p;
  }
  if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    // Transient (transport, leader change, broker down): librdkafka retries by itself.
    noteError(rd_kafka_message_errstr(msg.get()));
    return std::nullopt;
  }
  {
    std::lock_guard<std::mutex> lk(observe_mu_);
    health_.failing = false;
  }
  p.offset = msg->offset;
  p.value_bytes = msg->payload ? msg->len : 0;
  p.cost += kRecordOverhead + 2 * p.value_bytes;
  RecordHeaders headers;
  rd_kafka_headers_t* hdrs = nullptr;
  if (rd_kafka_message_headers(msg.get(), &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != nullptr) {
    const void* v = nullptr;
    size_t n = 0;
    headers.newkey = rd_kafka_header_get_last(hdrs, "__debezium.newkey", &v, &n) ==
                     RD_KAFKA_RESP_ERR_NO_ERROR;
    headers.oldkey = rd_kafka_header_get_last(hdrs, "__debezium.oldkey", &v, &n) ==
                     RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  std::string_view value(static_cast<const char*>(msg->payload), p.value_bytes);
  try {
    p.record = decoder_.decode(value, headers);
  } catch (const std::exception& e) {
    // Nothing in the decoder throws by design; if something does (allocation), the record is
    // reported as a bad event rather than ending the process from this thread.
    p.record = Status::internal(std::string("decoding failed: ") + e.what());
  }
  if (!p.record) p.message = std::move(msg);  // deadLetter() writes the record as it came
  return p;
}

Result<std::optional<ChangeEvent>> KafkaDebeziumSource::next(std::chrono::milliseconds timeout) {
  if (!fatal_.isOk()) return fatal_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pending_.empty()) {
    std::optional<Polled> item;
    {
      std::unique_lock<std::mutex> lk(queue_mu_);
      while (queue_.empty()) {
        auto now = std::chrono::steady_clock::now();
        const KafkaHealth h = health();
        if (h.failing && now - h.failing_since >= options_.give_up_after) {
          return Status::retryable("kafka brokers failing for " +
                                   std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                      now - h.failing_since).count()) +
                                   " s: " + h.last_error);
        }
        if (now >= deadline) return std::optional<ChangeEvent>();
        // Wakes at least every poll interval to look at the brokers' health again.
        queue_has_items_.wait_until(lk, std::min(deadline, now + std::chrono::milliseconds(kPollMs)));
      }
      item.emplace(std::move(queue_.front()));
      queue_.pop_front();
      const bool was_full = queued_cost_ >= options_.max_decoded_bytes;
      queued_cost_ -= item->cost;
      if (was_full && queued_cost_ < options_.max_decoded_bytes) queue_has_room_.notify_one();
    }
    switch (item->kind) {
      case Polled::Kind::kFatal:
        fatal_ = item->fatal;
        return fatal_;
      case Polled::Kind::kEof:
        at_eof_.insert(item->part);
        continue;
      case Polled::Kind::kRecord:
        SM_RETURN_IF_ERROR(handleRecord(*item));
        break;
    }
  }
  ChangeEvent ev = std::move(pending_.front());
  pending_.pop_front();
  if (pending_.empty() && pending_offset_) {
    // The record's last event (its Commit) is handed out: its offset may now be committed.
    committed_[pending_offset_->first] = pending_offset_->second;
    unacked_.push_back({next_position_ - 1, *pending_offset_});
    pending_offset_.reset();
  }
  return std::optional<ChangeEvent>(std::move(ev));
}

Status KafkaDebeziumSource::handleRecord(Polled& p) {
  const std::string& topic = p.part.first;
  const PartKey& pk = p.part;
  at_eof_.erase(pk);
  {
    std::lock_guard<std::mutex> lk(observe_mu_);
    stats_.messages++;
    stats_.bytes += p.value_bytes;
  }
  auto& decoded = p.record;
  auto skip = [&]() {
    // Nothing to apply: the offset is committable at once, durable with the next position.
    committed_[pk] = p.offset + 1;
    unacked_.push_back({next_position_, {pk, p.offset + 1}});
    return Status::ok();
  };
  if (!decoded) {
    std::string where = "kafka topic " + topic + " partition " + std::to_string(pk.second) +
                        " offset " + std::to_string(p.offset);
    if (options_.on_bad_event == BadEventPolicy::kStop)
      return decoded.status().withContext(where + ": bad event");
    SM_RETURN_IF_ERROR(deadLetter(p.message.get(), decoded.status().message()));
    {
      std::lock_guard<std::mutex> lk(observe_mu_);
      stats_.bad_events++;
    }
    spdlog::warn("{}: bad event dead-lettered to {}: {}", where, options_.dead_letter_path,
                 decoded.status().message());
    return skip();
  }
  DebeziumRecord& rec = *decoded;
  switch (rec.kind) {
    case DebeziumRecord::Kind::kTombstone: {
      std::lock_guard<std::mutex> lk(observe_mu_);
      stats_.tombstones++;
      return skip();
    }
    case DebeziumRecord::Kind::kSkipped: {
      std::lock_guard<std::mutex> lk(observe_mu_);
      stats_.skipped++;
      return skip();
    }
    case DebeziumRecord::Kind::kChange:
    case DebeziumRecord::Kind::kMessage:
      break;
  }
  if (rec.kind == DebeziumRecord::Kind::kChange && rec.change.op == common::ChangeOp::kTruncate) {
    // A TRUNCATE event has no key: the connector's producer puts it on any partition, so its
    // order against row events on the topic's other partitions is unknown, and applying it
    // (a tenant-scoped DELETE) could remove rows inserted after it. Safe only on a topic of one
    // partition; otherwise stop rather than lose rows.
    size_t parts = 0;
    for (const auto& sp : options_.start) parts += sp.topic == topic ? 1 : 0;
    if (parts > 1) {
      return Status::refused(
          "kafka topic " + topic + " partition " + std::to_string(pk.second) + " offset " +
          std::to_string(p.offset) + ": a TRUNCATE of " +
          (rec.relation ? rec.relation->key() : std::string("a moved table")) + " on a topic of " +
          std::to_string(parts) + " partitions cannot be ordered against the row changes of its "
          "other partitions; start the migration over after the truncate (`stampmover cleanup "
          "--purge-destination`, then migrate), or give the table's topic one partition");
    }
  }
  const uint64_t pos = next_position_++;
  common::Lsn lsn(pos);
  auto relation = [&](const std::shared_ptr<const common::Relation>& rel) {
    if (rel && relations_sent_.insert(rel->id).second) {
      ChangeEvent r;
      r.kind = ChangeEvent::Kind::kRelation;
      r.relation = rel;
      pending_.push_back(std::move(r));
    }
  };
  relation(rec.relation);
  for (const auto& t : rec.change.truncated) relation(t);
  ChangeEvent begin;
  begin.kind = ChangeEvent::Kind::kBegin;
  begin.txn.xid = static_cast<uint32_t>(rec.txid.value_or(0));
  begin.txn.final_lsn = lsn;
  // Debezium's ts_ms is Unix milliseconds; the event wants µs since 2000-01-01.
  begin.txn.commit_time_us = (rec.ts_ms - 946'684'800'000LL) * 1000;
  begin.wal_start = lsn;
  ChangeEvent commit = begin;
  commit.kind = ChangeEvent::Kind::kCommit;
  commit.txn.commit_lsn = lsn;
  commit.txn.end_lsn = lsn;
  pending_.push_back(std::move(begin));
  ChangeEvent body;
  body.wal_start = lsn;
  if (rec.kind == DebeziumRecord::Kind::kMessage) {
    body.kind = ChangeEvent::Kind::kMessage;
    body.message = std::move(rec.message);
    body.message.lsn = lsn;
  } else {
    body.kind = ChangeEvent::Kind::kChange;
    body.change = std::move(rec.change);
    std::lock_guard<std::mutex> lk(observe_mu_);
    stats_.changes++;
  }
  pending_.push_back(std::move(body));
  pending_.push_back(std::move(commit));
  pending_offset_ = {pk, p.offset + 1};
  return Status::ok();
}

Status KafkaDebeziumSource::deadLetter(const rd_kafka_message_t* msg, const std::string& reason) {
  // The record's key is Debezium's key of the row (its primary key, JSON): `verify
  // --dead-letter` finds the affected row by it. Kept as JSON when it parses, else as text;
  // null for a record without a key.
  nlohmann::json key = nullptr;
  if (msg->key != nullptr) {
    std::string_view text(static_cast<const char*>(msg->key), msg->key_len);
    key = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (key.is_discarded()) key = std::string(text);
  }
  nlohmann::json line = {
      {"topic", msg->rkt ? rd_kafka_topic_name(msg->rkt) : ""},
      {"partition", msg->partition},
      {"offset", msg->offset},
      {"reason", reason},
      {"key", std::move(key)},
      {"value", std::string(static_cast<const char*>(msg->payload), msg->payload ? msg->len : 0)}};
  dead_letter_ << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  dead_letter_.flush();
  if (!dead_letter_) return Status::internal("cannot write dead-letter file " + options_.dead_letter_path);
  return Status::ok();
}

Status KafkaDebeziumSource::acknowledge(common::Lsn flushed) {
  while (!unacked_.empty() && unacked_.front().first <= flushed.value()) {
    durable_[unacked_.front().second.first] = unacked_.front().second.second;
    unacked_.pop_front();
  }
  return Status::ok();
}

std::vector<PartitionOffset> KafkaDebeziumSource::committedOffsets() const {
  std::vector<PartitionOffset> out;
  for (const auto& [k, off] : committed_) out.push_back({k.first, k.second, off});
  return out;
}

std::vector<PartitionOffset> KafkaDebeziumSource::durableOffsets() const {
  std::vector<PartitionOffset> out;
  for (const auto& [k, off] : durable_) out.push_back({k.first, k.second, off});
  return out;
}

bool KafkaDebeziumSource::reached(const std::vector<PartitionOffset>& ends) const {
  if (!pending_.empty()) return false;
  for (const auto& e : ends) {
    auto it = committed_.find({e.topic, e.partition});
    if (e.offset <= 0) continue;  // an empty partition is reached from the start
    if (it == committed_.end() || it->second < e.offset) return false;
  }
  return true;
}

uint64_t KafkaDebeziumSource::lagRecords() const {
  uint64_t lag = 0;
  for (const auto& [k, next] : committed_) {
    int64_t low = 0, high = 0;
    if (rd_kafka_get_watermark_offsets(rk_.get(), k.first.c_str(), k.second, &low, &high) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
      continue;  // not fetched yet: unknown, counted as nothing rather than guessed
    const int64_t from = next < 0 ? low : next;
    if (high > from) lag += static_cast<uint64_t>(high - from);
  }
  return lag;
}

Result<std::vector<PartitionOffset>> KafkaDebeziumSource::endOffsets(
    const std::map<std::string, std::string>& kafka, const std::vector<PartitionOffset>& partitions,
    std::chrono::milliseconds timeout) {
  SM_ASSIGN_OR_RETURN(common::KafkaConf conf, makeConf({}, kafka));
  char err[512];
  common::KafkaHandle rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err));
  if (!rk) return Status::refused(std::string("kafka client: ") + err);
  conf.release();
  return endOffsetsOn(rk.get(), partitions, timeout);
}

Result<std::vector<PartitionOffset>> KafkaDebeziumSource::endOffsetsOn(
    rd_kafka_t* rk, const std::vector<PartitionOffset>& partitions, std::chrono::milliseconds timeout) {
  std::vector<PartitionOffset> out;
  for (const auto& p : partitions) {
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(
        rk, p.topic.c_str(), p.partition, &low, &high, static_cast<int>(timeout.count()));
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      return Status::retryable("kafka: end offset of topic " + p.topic + " partition " +
                               std::to_string(p.partition) + ": " + rd_kafka_err2str(e));
    }
    out.push_back({p.topic, p.partition, high});
  }
  return out;
}

bool KafkaDebeziumSource::caughtUp() const {
  if (!pending_.empty() || at_eof_.size() != committed_.size()) return false;
  // Records decoded but not yet taken by next() are not caught up either.
  std::lock_guard<std::mutex> lk(queue_mu_);
  return queue_.empty();
}

Result<std::vector<PartitionOffset>> KafkaDebeziumSource::partitionsOf(
    const std::map<std::string, std::string>& kafka, const std::vector<std::string>& topics,
    std::chrono::milliseconds timeout) {
  SM_ASSIGN_OR_RETURN(common::KafkaConf conf, makeConf({}, kafka));
  char err[512];
  common::KafkaHandle rk(rd_kafka_new(RD_KAFKA_CONSUMER, conf.get(), err, sizeof err));
  if (!rk) return Status::refused(std::string("kafka client: ") + err);
  conf.release();
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t merr =
      rd_kafka_metadata(rk.get(), 1, nullptr, &md, static_cast<int>(timeout.count()));
  if (merr != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Status::retryable(std::string("kafka metadata: ") + rd_kafka_err2str(merr));
  std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> guard(
      md, rd_kafka_metadata_destroy);
  std::vector<PartitionOffset> out;
  for (const auto& t : topics) {
    bool found = false;
    for (int i = 0; i < md->topic_cnt; ++i) {
      const auto& mt = md->topics[i];
      if (t != mt.topic || mt.err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
      found = true;
      for (int j = 0; j < mt.partition_cnt; ++j) out.push_back({t, mt.partitions[j].id, kOffsetBeginning});
    }
    if (!found) return Status::refused("kafka topic " + t + " does not exist: check --topic-prefix");
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.topic, a.partition) < std::tie(b.topic, b.partition);
  });
  return out;
}

}  // namespace stampmover::cdc
