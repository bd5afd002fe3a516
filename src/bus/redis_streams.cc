#include "bus/redis_streams.h"

#include <algorithm>
#include <charconv>
#include <thread>

#include "core/time.h"

namespace hi::bus {
namespace {

using redis::Reply;

// "1700000000000-5" -> {1700000000000, 5}
std::pair<std::uint64_t, std::uint64_t> parse_id(std::string_view id) {
  std::uint64_t ms = 0, seq = 0;
  const auto dash = id.find('-');
  std::from_chars(id.data(), id.data() + std::min(dash, id.size()), ms);
  if (dash != std::string_view::npos)
    std::from_chars(id.data() + dash + 1, id.data() + id.size(), seq);
  return {ms, seq};
}

// Error replies that mean "not now" rather than "never".
bool transient_error(std::string_view reply) {
  for (std::string_view prefix : {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN",
                                  "READONLY", "NOREPLICAS", "OOM"}) {
    if (reply.starts_with(prefix)) return true;
  }
  return false;
}

std::string id_after(std::string_view id) {
  auto [ms, seq] = parse_id(id);
  return std::to_string(ms) + "-" + std::to_string(seq + 1);
}

}  // namespace

Result<std::unique_ptr<RedisStreamsProducer>> RedisStreamsProducer::create(
    const BusOptions& options, DeliveryHandler on_delivery) {
  auto client = redis::Client::connect(options.redis_url);
  if (!client) return client.error().wrap("redis streams producer");
  return std::unique_ptr<RedisStreamsProducer>(
      new RedisStreamsProducer(std::move(*client), std::move(on_delivery)));
}

Status RedisStreamsProducer::send(Message message, std::uint64_t tag) {
  // Redis' proto-max-bulk-len is 512 MB; refuse well below it.
  if (message.value.size() > 64 * 1024 * 1024) {
    return invalid_argument("message of " + std::to_string(message.value.size()) +
                            " bytes exceeds the 64 MB limit of the Redis Streams bus");
  }
  queue_.push_back(Pending{std::move(message), tag});
  return {};
}

std::size_t RedisStreamsProducer::poll(std::chrono::milliseconds timeout) {
  if (queue_.empty()) return 0;
  if (degraded_) {
    const auto now = std::chrono::steady_clock::now();
    if (now < retry_at_) {
      std::this_thread::sleep_for(
          std::min<std::chrono::steady_clock::duration>(retry_at_ - now, timeout));
      if (std::chrono::steady_clock::now() < retry_at_) return 0;
    }
  }
  std::size_t reported = 0;
  while (!queue_.empty()) {
    // While degraded, one message probes the server: a restarted Redis loading its AOF is not
    // handed megabytes of pipeline it can only refuse.
    const std::size_t n = degraded_ ? 1 : std::min(queue_.size(), kMaxBatch);
    std::vector<std::string_view> argv;
    for (std::size_t i = 0; i < n; ++i) {
      const Message& m = queue_[i].message;
      argv.clear();
      argv.insert(argv.end(), {"XADD", m.topic, "*", "key", m.key, "value", m.value});
      for (const auto& [k, v] : m.headers) {
        argv.push_back(k);
        argv.push_back(v);
      }
      client_.append(std::span<const std::string_view>(argv));
    }
    auto replies = client_.flush();
    if (replies && replies->size() != n) {
      // Never credit a reply to the wrong message: a short reply set fails the whole batch.
      replies = unavailable("redis pipeline: " + std::to_string(replies->size()) + " replies for " +
                            std::to_string(n) + " messages");
    }
    if (!replies) {
      // Nothing is reported: the batch stays queued and goes again (some entries may have been
      // added before the connection broke: at-least-once, deduplicated by consumers' inboxes).
      hold("redis unreachable; holding messages and retrying", replies.error().message);
      return reported;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const Reply& r = (*replies)[i];
      if (r.is_error() && transient_error(r.str)) {
        // Redis answers but cannot take writes yet (loading its AOF after a restart, busy
        // script, failover): keep this and every later message queued, in order, and retry.
        // Later ones that did succeed are sent again: at-least-once, order kept.
        hold("redis refuses writes for now; holding messages and retrying", r.str);
        return reported;
      }
      if (degraded_) {
        log_.info("redis takes writes again; resuming",
                  {{"queued", queue_.size()}, {"retries", backoff_.retries()}});
        degraded_ = false;
        problem_.clear();
        backoff_.reset();
      }
      Pending p = std::move(queue_.front());
      queue_.pop_front();
      if (r.is_error()) {
        on_delivery_(p.tag, internal_error("XADD " + p.message.topic + ": " + r.str));
      } else {
        on_delivery_(p.tag, Status());
      }
      ++reported;
    }
  }
  return reported;
}

// Keeps the queue, schedules the next attempt with a growing delay, and logs each new kind of
// trouble once (an outage of minutes is two lines, not thousands).
void RedisStreamsProducer::hold(std::string_view what, const std::string& detail) {
  const std::string kind = detail.substr(0, detail.find(' '));
  if (!degraded_ || kind != problem_) {
    log_.warn(what, {{"error", detail}, {"queued", queue_.size()}});
    problem_ = kind;
  }
  degraded_ = true;
  retry_at_ = std::chrono::steady_clock::now() + backoff_.next();
}

Status RedisStreamsProducer::ensure_topics(const std::vector<std::string>&) {
  return {};  // streams are created by the first XADD
}

Result<std::unique_ptr<RedisStreamsConsumer>> RedisStreamsConsumer::create(
    const BusOptions& options, const ConsumerOptions& consumer) {
  auto client = redis::Client::connect(options.redis_url);
  if (!client) return client.error().wrap("redis streams consumer");
  auto c =
      std::unique_ptr<RedisStreamsConsumer>(new RedisStreamsConsumer(std::move(*client), consumer));
  if (auto s = c->ensure_groups(); !s) return s.error();
  return c;
}

Status RedisStreamsConsumer::ensure_groups() {
  for (const auto& t : options_.topics) {
    // "0": a new group starts at the beginning, so nothing published before the first
    // consumer started is missed.
    auto r = client_.command({"XGROUP", "CREATE", t, options_.group, "0", "MKSTREAM"});
    if (!r) return r.error();
    if (r->is_error() && r->str.find("BUSYGROUP") == std::string::npos) {
      return internal_error("XGROUP CREATE " + t + ": " + r->str);
    }
  }
  groups_ready_ = true;
  return {};
}

Delivery delivery_from_entry(const std::string& stream, Reply entry) {
  Delivery d;
  d.topic = stream;
  if (entry.elements.size() < 2) return d;
  d.position = std::move(entry.elements[0].str);
  // "<ms>-<n>": XADD's "*" takes the ms from the server's clock.
  const auto dash = d.position.find('-');
  std::from_chars(d.position.data(), d.position.data() + std::min(dash, d.position.size()),
                  d.appended_unix_ms);
  auto& fields = entry.elements[1].elements;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
    const std::string& f = fields[i].str;
    if (f == "key") {
      d.key = std::move(fields[i + 1].str);
    } else if (f == "value") {
      d.value = std::move(fields[i + 1].str);
    } else {
      d.headers.emplace_back(f, std::move(fields[i + 1].str));
    }
  }
  return d;
}

Result<std::vector<Delivery>> RedisStreamsConsumer::reclaim(std::size_t max,
                                                            std::chrono::milliseconds idle_for,
                                                            bool at_start) {
  std::vector<Delivery> out;
  const std::string idle = std::to_string(idle_for.count());
  const std::string count = std::to_string(max);
  for (const auto& t : options_.topics) {
    // At start the scan goes on from where the last one stopped, so entries claimed by an
    // earlier pass (now this consumer's, maybe still in hand) are not claimed again.
    std::string& cursor = start_cursors_[t];
    if (!at_start || cursor.empty()) cursor = "0-0";
    auto r = client_.command(
        {"XAUTOCLAIM", t, options_.group, options_.consumer_name, idle, cursor, "COUNT", count});
    if (!r) return r.error();
    if (r->is_error() || r->elements.size() < 2) {
      cursor = "0-0";
      continue;
    }
    cursor = r->elements[0].str;
    const std::size_t first = out.size();
    for (auto& e : r->elements[1].elements) {
      if (e.type != Reply::Type::kArray || e.elements.size() < 2) continue;  // deleted entry
      Delivery d = delivery_from_entry(t, std::move(e));
      d.delivery_count = 2;  // at least the second delivery; exact below when Redis says
      out.push_back(std::move(d));
    }
    // XAUTOCLAIM does not return the delivery counts: read them from the pending list.
    read_delivery_counts(t, out, first, max);
  }
  return out;
}

void RedisStreamsConsumer::read_delivery_counts(const std::string& topic,
                                                std::vector<Delivery>& out, std::size_t first,
                                                std::size_t max) {
  if (out.size() == first) return;
  auto p = client_.command({"XPENDING", topic, options_.group, out[first].position,
                            out.back().position, std::to_string(max), options_.consumer_name});
  if (!p || p->is_error()) return;
  std::map<std::string, std::int64_t> counts;
  for (const auto& row : p->elements) {
    if (row.elements.size() >= 4) counts[row.elements[0].str] = row.elements[3].integer;
  }
  for (std::size_t i = first; i < out.size(); ++i) {
    if (auto it = counts.find(out[i].position); it != counts.end() && it->second > 1) {
      out[i].delivery_count = static_cast<int>(it->second);
    }
  }
}

Result<std::vector<Delivery>> RedisStreamsConsumer::poll(std::size_t max,
                                                         std::chrono::milliseconds timeout) {
  if (!groups_ready_) {
    if (auto s = ensure_groups(); !s) return s.error();
  }
  const auto now = std::chrono::steady_clock::now();
  const bool at_start = starting_ && options_.start_claim_idle.count() >= 0;
  // At start the consumer's own history is read before anything is claimed: claimed entries
  // join that history, and would come back from it.
  if (now >= next_claim_ && !(at_start && read_own_pending_)) {
    next_claim_ = now + std::max(std::chrono::milliseconds(100), options_.claim_idle / 4);
    auto claimed =
        reclaim(max, at_start ? options_.start_claim_idle : options_.claim_idle, at_start);
    if (!claimed) return claimed.error();
    // The start ends when every stream's scan has come round ("0-0"); until then, again at the
    // next poll.
    starting_ = at_start && std::any_of(start_cursors_.begin(), start_cursors_.end(),
                                        [](const auto& c) { return c.second != "0-0"; });
    if (starting_) next_claim_ = now;
    if (!claimed->empty()) return claimed;
  }
  // Our own pending entries first ("0": no BLOCK, the history answers at once), then new ones.
  const bool history = read_own_pending_;
  std::vector<std::string> argv = {"XREADGROUP",           "GROUP", options_.group,
                                   options_.consumer_name, "COUNT", std::to_string(max)};
  if (!history) {
    argv.insert(argv.end(), {"BLOCK", std::to_string(std::max<std::int64_t>(1, timeout.count()))});
  }
  argv.push_back("STREAMS");
  for (const auto& t : options_.topics) argv.push_back(t);
  for (std::size_t i = 0; i < options_.topics.size(); ++i) argv.push_back(history ? "0" : ">");
  client_.set_timeout(timeout + std::chrono::seconds(5));
  // Deferred acknowledgements first, in the same round trip (commit_later()).
  const std::size_t acks = deferred_acks_.size();
  append_acks(deferred_acks_);
  client_.append(argv);
  auto replies = client_.flush();
  if (!replies) {
    read_own_pending_ = true;  // a reply lost with the connection may have delivered entries
    return replies.error();    // the acknowledgements stay deferred
  }
  if (replies->size() != acks + 1) return internal_error("XREADGROUP: missing replies");
  bool acked = true;
  for (std::size_t i = 0; i < acks; ++i) acked = acked && !(*replies)[i].is_error();
  if (acked) deferred_acks_.clear();
  Reply* r = &replies->back();
  if (r->is_error()) {
    if (r->str.find("NOGROUP") != std::string::npos) groups_ready_ = false;  // stream deleted
    return unavailable("XREADGROUP: " + r->str);
  }
  std::vector<Delivery> out;
  for (auto& stream : r->elements) {
    if (stream.elements.size() < 2) continue;
    const std::string& name = stream.elements[0].str;
    const std::size_t first = out.size();
    if (!history) out.reserve(out.size() + stream.elements[1].elements.size());
    for (auto& e : stream.elements[1].elements) {
      // A history entry trimmed from the stream since comes back as [id, nil]: acknowledged
      // with the next poll, there is nothing to apply.
      if (history && (e.elements.size() < 2 || e.elements[1].type != Reply::Type::kArray)) {
        if (!e.elements.empty()) deferred_acks_[name].push_back(e.elements[0].str);
        continue;
      }
      out.push_back(delivery_from_entry(name, std::move(e)));
    }
    if (!history) continue;
    // Given to us before and never acknowledged: it may be what ended our previous process,
    // so the runtime treats it as a suspect whatever count the pending list shows.
    read_delivery_counts(name, out, first, max);
    for (std::size_t i = first; i < out.size(); ++i) {
      out[i].delivery_count = std::max(out[i].delivery_count, 2);
    }
  }
  if (history && out.empty()) {
    // None left (or only trimmed ones, now acknowledged): new entries from the next read on.
    // (Stop reading history when acknowledging failed, rather than loop.)
    read_own_pending_ = acked && !deferred_acks_.empty();
    return poll(max, timeout);
  }
  return out;
}

void RedisStreamsConsumer::append_acks(const std::map<std::string, std::vector<std::string>>& ids) {
  for (const auto& [topic, positions] : ids) {
    std::vector<std::string> argv = {"XACK", topic, options_.group};
    argv.insert(argv.end(), positions.begin(), positions.end());
    client_.append(argv);
  }
}

Status RedisStreamsConsumer::commit(const std::vector<Delivery>& deliveries) {
  std::map<std::string, std::vector<std::string>> by_topic = deferred_acks_;
  for (const auto& d : deliveries) by_topic[d.topic].push_back(d.position);
  if (by_topic.empty()) return {};
  append_acks(by_topic);
  auto r = client_.flush();
  if (!r) return r.error().wrap("XACK");
  for (const auto& reply : *r) {
    if (reply.is_error()) return internal_error("XACK: " + reply.str);
  }
  deferred_acks_.clear();
  return {};
}

Status RedisStreamsConsumer::commit_later(const std::vector<Delivery>& deliveries) {
  for (const auto& d : deliveries) deferred_acks_[d.topic].push_back(d.position);
  return {};
}

Result<std::int64_t> RedisStreamsConsumer::lag() {
  std::int64_t total = 0;
  for (const auto& t : options_.topics) {
    auto r = client_.command({"XINFO", "GROUPS", t});
    if (!r) return r.error();
    if (r->is_error()) continue;
    for (const auto& g : r->elements) {
      std::string name;
      std::int64_t pending = 0, lag = 0;
      for (std::size_t i = 0; i + 1 < g.elements.size(); i += 2) {
        const std::string& f = g.elements[i].str;
        if (f == "name") name = g.elements[i + 1].str;
        if (f == "pending") pending = g.elements[i + 1].integer;
        if (f == "lag") lag = g.elements[i + 1].integer;
      }
      if (name == options_.group) total += pending + lag;
    }
  }
  return total;
}

Result<std::int64_t> trim_stream(redis::Client& client, const std::string& stream,
                                 std::chrono::milliseconds keep) {
  auto groups = client.command({"XINFO", "GROUPS", stream});
  if (!groups) return groups.error();
  if (groups->is_error()) return 0;  // no such stream
  std::optional<std::pair<std::uint64_t, std::uint64_t>> safe;
  for (const auto& g : groups->elements) {
    std::string name, last_delivered;
    std::int64_t pending = 0;
    for (std::size_t i = 0; i + 1 < g.elements.size(); i += 2) {
      const std::string& f = g.elements[i].str;
      if (f == "name") name = g.elements[i + 1].str;
      if (f == "pending") pending = g.elements[i + 1].integer;
      if (f == "last-delivered-id") last_delivered = g.elements[i + 1].str;
    }
    // The first entry this group still needs: its oldest pending one, else the one after the
    // last delivered.
    std::string needed = id_after(last_delivered);
    if (pending > 0) {
      auto p = client.command({"XPENDING", stream, name});
      if (!p) return p.error();
      if (!p->is_error() && p->elements.size() >= 2 && !p->elements[1].is_nil()) {
        needed = p->elements[1].str;
      }
    }
    const auto id = parse_id(needed);
    if (!safe || id < *safe) safe = id;
  }
  // A stream that no group reads (events.dlq: its entries are also rows of event_dlq) is
  // trimmed by age alone; one that groups read never below what a group still needs.
  const auto age_limit_ms = static_cast<std::uint64_t>(unix_now_us() / 1000 - keep.count());
  std::pair<std::uint64_t, std::uint64_t> min_id = {age_limit_ms, 0};
  if (safe && *safe < min_id) min_id = *safe;
  const std::string minid = std::to_string(min_id.first) + "-" + std::to_string(min_id.second);
  auto r = client.command({"XTRIM", stream, "MINID", "~", minid});
  if (!r) return r.error();
  if (r->is_error()) return internal_error("XTRIM " + stream + ": " + r->str);
  return r->integer;
}

}  // namespace hi::bus
