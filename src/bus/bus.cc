#include "bus/bus.h"

#include "bus/kafka.h"
#include "bus/redis_streams.h"

namespace hi::bus {

Result<std::unique_ptr<Producer>> make_producer(const BusOptions& options,
                                                DeliveryHandler on_delivery) {
  if (options.kind == "kafka") {
    return make_kafka_producer(options, std::move(on_delivery), options.kafka_producer_properties);
  }
  auto p = RedisStreamsProducer::create(options, std::move(on_delivery));
  if (!p) return p.error();
  return std::unique_ptr<Producer>(std::move(*p));
}

Result<std::unique_ptr<Consumer>> make_consumer(const BusOptions& options,
                                                const ConsumerOptions& consumer) {
  if (options.kind == "kafka") return make_kafka_consumer(options, consumer);
  auto c = RedisStreamsConsumer::create(options, consumer);
  if (!c) return c.error();
  return std::unique_ptr<Consumer>(std::move(*c));
}

}  // namespace hi::bus
