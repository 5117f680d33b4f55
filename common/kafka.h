// RAII handles for librdkafka objects: a raw rd_kafka_t*, rd_kafka_conf_t* or message never
// outlives the owner that frees it. Header-only, so `common` itself need not link librdkafka:
// the library that uses these (cdc) links it.
#pragma once

#include <librdkafka/rdkafka.h>

#include <memory>

#include "common/handles.h"

namespace stampmover::common {

using KafkaHandle = std::unique_ptr<rd_kafka_t, CDeleter<rd_kafka_t, rd_kafka_destroy>>;
using KafkaConf = std::unique_ptr<rd_kafka_conf_t, CDeleter<rd_kafka_conf_t, rd_kafka_conf_destroy>>;
using KafkaTopicPartitionList =
    std::unique_ptr<rd_kafka_topic_partition_list_t,
                    CDeleter<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy>>;
using KafkaMessage =
    std::unique_ptr<rd_kafka_message_t, CDeleter<rd_kafka_message_t, rd_kafka_message_destroy>>;
using KafkaQueue = std::unique_ptr<rd_kafka_queue_t, CDeleter<rd_kafka_queue_t, rd_kafka_queue_destroy>>;
using KafkaEvent = std::unique_ptr<rd_kafka_event_t, CDeleter<rd_kafka_event_t, rd_kafka_event_destroy>>;

}  // namespace stampmover::common
