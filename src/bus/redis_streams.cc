#include "bus/redis_streams.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/process.h"
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

bool id_less(std::string_view a, std::string_view b) { return parse_id(a) < parse_id(b); }

std::string applied_key(std::string_view stream) { return "hi:bus:applied:" + std::string(stream); }

// One consumer group as XINFO GROUPS describes it.
struct GroupInfo {
  std::string name;
  std::int64_t pending = 0;
  std::int64_t lag = 0;  // 0 when Redis cannot tell (nil)
  std::string last_delivered;
};

std::vector<GroupInfo> parse_groups(const Reply& reply) {
  std::vector<GroupInfo> out;
  for (const auto& g : reply.elements) {
    GroupInfo& info = out.emplace_back();
    for (std::size_t i = 0; i + 1 < g.elements.size(); i += 2) {
      const std::string& f = g.elements[i].str;
      const Reply& v = g.elements[i + 1];
      if (f == "name") info.name = v.str;
      if (f == "pending") info.pending = v.integer;
      if (f == "lag") info.lag = v.integer;
      if (f == "last-delivered-id") info.last_delivered = v.str;
    }
  }
  return out;
}

// Takes the lease when it is free, ours, or `ARGV[3]` (a holder found dead); else returns
// its holder. KEYS[1] lease; ARGV: our value, ttl ms, the dead holder's value or "".
const redis::Script kTakeLease(R"lua(
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] or (ARGV[3] ~= '' and v == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return v
)lua");

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
  if (c->positioned()) {
    c->read_own_pending_ = false;  // nothing is ever pending: NOACK
    c->lease_key_ = "hi:bus:lease:" + consumer.group;
    c->lease_value_ = nlohmann::json{{"consumer", consumer.consumer_name},
                                     {"host", host_name()},
                                     {"pid", static_cast<std::int64_t>(::getpid())}}
                          .dump();
    for (const auto& t : consumer.topics) {
      const auto it = consumer.resume_from->find(t);
      c->handed_[t] = it == consumer.resume_from->end() || it->second.empty() ? "0-0" : it->second;
    }
  }
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

Result<std::vector<Delivery>> RedisStreamsConsumer::reclaim(std::size_t max) {
  std::vector<Delivery> out;
  const std::string idle = std::to_string(options_.claim_idle.count());
  const std::string count = std::to_string(max);
  for (const auto& t : options_.topics) {
    auto r = client_.command(
        {"XAUTOCLAIM", t, options_.group, options_.consumer_name, idle, "0-0", "COUNT", count});
    if (!r) return r.error();
    if (r->is_error() || r->elements.size() < 2) continue;
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
  if (positioned()) return poll_positioned(max, timeout);
  const auto now = std::chrono::steady_clock::now();
  if (now >= next_claim_) {
    next_claim_ = now + std::max(std::chrono::milliseconds(100), options_.claim_idle / 4);
    auto claimed = reclaim(max);
    if (!claimed) return claimed.error();
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

Status RedisStreamsConsumer::take_lease() {
  const std::string ttl = std::to_string(options_.lease_ttl.count());
  std::string dead;  // a holder found dead on this host, replaced on the second try
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto r = client_.eval(kTakeLease, {lease_key_}, {lease_value_, ttl, dead});
    if (!r) return r.error().wrap("lease of group " + options_.group);
    if (r->is_error()) return internal_error("lease of group " + options_.group + ": " + r->str);
    if (r->type == redis::Reply::Type::kInteger) {
      leased_ = true;
      regap_ = true;  // whoever held it may have taken entries it never applied
      return {};
    }
    const auto holder = nlohmann::json::parse(r->str, nullptr, false);
    const bool here = holder.is_object() && holder.value("host", "") == host_name();
    const std::int64_t pid = holder.is_object() ? holder.value("pid", std::int64_t{0}) : 0;
    if (!here || pid <= 0 || process_alive(static_cast<pid_t>(pid))) {
      return unavailable("group " + options_.group + " is read by another process (" + r->str +
                         "); waiting for its lease to end");
    }
    dead = r->str;
  }
  return unavailable("group " + options_.group + ": lease changed hands while taken");
}

Status RedisStreamsConsumer::acknowledge_old_pending() {
  for (const auto& t : options_.topics) {
    for (;;) {
      auto p = client_.command({"XPENDING", t, options_.group, "-", "+", "10000"});
      if (!p) return p.error();
      if (p->is_error() || p->elements.empty()) break;
      std::vector<std::string> argv = {"XACK", t, options_.group};
      for (const auto& row : p->elements) {
        if (!row.elements.empty()) argv.push_back(row.elements[0].str);
      }
      auto a = client_.command(argv);
      if (!a) return a.error();
      if (a->is_error()) return internal_error("XACK " + t + ": " + a->str);
      if (p->elements.size() < 10000) break;
    }
  }
  return {};
}

Status RedisStreamsConsumer::find_gaps() {
  for (const auto& t : options_.topics) {
    auto r = client_.command({"XINFO", "GROUPS", t});
    if (!r) return r.error();
    if (r->is_error()) continue;
    for (const auto& g : parse_groups(*r)) {
      if (g.name != options_.group) continue;
      const std::string& from = handed_[t];
      if (id_less(from, g.last_delivered)) gaps_[t] = Gap{from, g.last_delivered};
    }
  }
  regap_ = false;
  return {};
}

Result<std::vector<Delivery>> RedisStreamsConsumer::read_gaps(std::size_t max) {
  std::vector<Delivery> out;
  for (auto it = gaps_.begin(); it != gaps_.end() && out.empty();) {
    const std::string& t = it->first;
    Gap& gap = it->second;
    auto r = client_.command({"XREAD", "COUNT", std::to_string(max), "STREAMS", t, gap.after});
    if (!r) return r.error();
    if (r->is_error()) return unavailable("XREAD " + t + ": " + r->str);
    bool done = true;
    for (auto& stream : r->elements) {
      if (stream.elements.size() < 2) continue;
      for (auto& e : stream.elements[1].elements) {
        if (e.elements.empty() || id_less(gap.through, e.elements[0].str)) break;
        Delivery d = delivery_from_entry(t, std::move(e));
        d.delivery_count = 2;  // delivered before, to a reader that may not have applied it
        gap.after = d.position;
        out.push_back(std::move(d));
        done = false;
      }
    }
    if (done || !id_less(gap.after, gap.through)) {
      it = gaps_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

Status RedisStreamsConsumer::report_applied(const std::map<std::string, std::string>& positions) {
  if (positions.empty()) return {};
  for (const auto& [topic, position] : positions) {
    client_.append({"HSET", applied_key(topic), options_.group, position});
  }
  auto r = client_.flush();
  if (!r) return r.error().wrap("HSET applied position");
  for (const auto& reply : *r) {
    if (reply.is_error()) return internal_error("HSET applied position: " + reply.str);
  }
  return {};
}

void RedisStreamsConsumer::note_handed(const std::vector<Delivery>& out) {
  in_hand_ += static_cast<std::int64_t>(out.size());
  for (const auto& d : out) {
    std::string& h = handed_[d.topic];
    if (id_less(h, d.position)) h = d.position;
  }
}

Result<std::vector<Delivery>> RedisStreamsConsumer::poll_positioned(
    std::size_t max, std::chrono::milliseconds timeout) {
  if (!leased_) {
    if (auto s = take_lease(); !s) {
      // Not ours: wait as a reader would for entries, then say so.
      std::this_thread::sleep_for(std::min(timeout, options_.lease_ttl / 4));
      return s.error();
    }
  }
  if (!started_) {
    // Nothing is handed out before this is done, so handed_ holds the caller's positions:
    // retention keeps what follows them from now on, before anything the old pending list
    // protected is acknowledged.
    if (auto s = report_applied(handed_); !s) return s.error();
    if (auto s = acknowledge_old_pending(); !s) return s.error();
    started_ = true;
  }
  if (regap_) {
    if (auto s = find_gaps(); !s) return s.error();
  }
  if (!gaps_.empty()) {
    auto gap = read_gaps(max);
    if (!gap) {
      regap_ = true;
      return gap.error();
    }
    note_handed(*gap);
    if (!gap->empty()) return gap;
  }
  // The read holds the lease: WATCHed and found ours, then renewed and read in one MULTI, which
  // Redis refuses to run when the lease changed hands (or expired) in between. (A script could
  // do both in one round trip, but Redis would copy every entry into Lua and back: it cost
  // more than the read itself.)
  const std::string ttl = std::to_string(options_.lease_ttl.count());
  client_.set_timeout(timeout + std::chrono::seconds(5));
  client_.append({"WATCH", lease_key_});
  client_.append({"GET", lease_key_});
  auto held = client_.flush();
  if (!held) return held.error();
  if (held->size() != 2 || (*held)[1].is_error()) return internal_error("lease: bad reply");
  const std::uint64_t watching = client_.connections();
  if ((*held)[1].str != lease_value_) {
    (void)client_.command({"UNWATCH"});
    leased_ = false;
    if (!(*held)[1].is_nil()) {
      // Another process reads the group now: what this one would hand out from here could
      // overtake entries only that one holds. The caller starts over from its stored positions.
      return failed_precondition("group " + options_.group +
                                 " is read by another process now: " + (*held)[1].str);
    }
    if (auto s = take_lease(); !s) return s.error();  // expired: taken again, gaps first
    return std::vector<Delivery>{};
  }
  std::vector<std::string> argv = {
      "XREADGROUP",        "GROUP", options_.group, options_.consumer_name, "COUNT",
      std::to_string(max), "NOACK", "STREAMS"};
  for (const auto& t : options_.topics) argv.push_back(t);
  for (std::size_t i = 0; i < options_.topics.size(); ++i) argv.push_back(">");
  client_.append({"MULTI"});
  if (client_.connections() != watching) {
    // The connection broke since the WATCH, and MULTI went on a new one, where nothing is
    // watched: the read would not depend on the lease. Nothing is read; the next poll watches
    // again.
    client_.append({"DISCARD"});
    (void)client_.flush();
    return std::vector<Delivery>{};
  }
  client_.append({"PEXPIRE", lease_key_, ttl});
  client_.append(argv);
  client_.append({"EXEC"});
  auto replies = client_.flush();
  if (!replies) {
    regap_ = true;  // a reply lost with the connection may have delivered entries
    return replies.error();
  }
  if (replies->size() != 4) return internal_error("leased read: missing replies");
  const redis::Reply& exec = replies->back();
  if (exec.is_nil()) return std::vector<Delivery>{};  // the lease moved: seen at the next poll
  if (exec.is_error() || exec.elements.size() != 2) {
    regap_ = true;
    return unavailable("leased read: " + (exec.is_error() ? exec.str : std::string("bad reply")));
  }
  redis::Reply& read = replies->back().elements[1];
  if (read.is_error()) {
    if (read.str.find("NOGROUP") != std::string::npos) groups_ready_ = false;
    return unavailable("XREADGROUP: " + read.str);
  }
  std::vector<Delivery> out;
  for (auto& stream : read.elements) {
    if (stream.elements.size() < 2) continue;
    const std::string& name = stream.elements[0].str;
    out.reserve(out.size() + stream.elements[1].elements.size());
    for (auto& e : stream.elements[1].elements)
      out.push_back(delivery_from_entry(name, std::move(e)));
  }
  if (!out.empty()) {
    note_handed(out);
    return out;
  }
  // Nothing new: what was handed out is all the group delivered (gaps are read first), so wait
  // for an entry after it; the next poll reads it under the lease.
  std::vector<std::string> wait = {
      "XREAD",  "COUNT", "1", "BLOCK", std::to_string(std::max<std::int64_t>(1, timeout.count())),
      "STREAMS"};
  for (const auto& t : options_.topics) wait.push_back(t);
  for (const auto& t : options_.topics) wait.push_back(handed_[t]);
  auto w = client_.command(wait);
  if (!w) return w.error();
  if (w->is_error()) return unavailable("XREAD: " + w->str);
  return std::vector<Delivery>{};
}

void RedisStreamsConsumer::append_acks(const std::map<std::string, std::vector<std::string>>& ids) {
  for (const auto& [topic, positions] : ids) {
    std::vector<std::string> argv = {"XACK", topic, options_.group};
    argv.insert(argv.end(), positions.begin(), positions.end());
    client_.append(argv);
  }
}

Status RedisStreamsConsumer::commit(const std::vector<Delivery>& deliveries) {
  if (positioned()) {
    in_hand_ = std::max<std::int64_t>(0, in_hand_ - static_cast<std::int64_t>(deliveries.size()));
    std::map<std::string, std::string> top;  // topic -> the highest position committed
    for (const auto& d : deliveries) {
      std::string& t = top[d.topic];
      if (t.empty() || id_less(t, d.position)) t = d.position;
    }
    return report_applied(top);
  }
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
  if (positioned()) return commit(deliveries);
  for (const auto& d : deliveries) deferred_acks_[d.topic].push_back(d.position);
  return {};
}

Result<std::int64_t> RedisStreamsConsumer::lag() {
  std::int64_t total = 0;
  for (const auto& t : options_.topics) {
    auto r = client_.command({"XINFO", "GROUPS", t});
    if (!r) return r.error();
    if (r->is_error()) continue;
    for (const auto& g : parse_groups(*r)) {
      if (g.name == options_.group) total += g.pending + g.lag;
    }
  }
  return total + in_hand_;
}

Result<std::int64_t> trim_stream(redis::Client& client, const std::string& stream,
                                 std::chrono::milliseconds keep) {
  auto groups = client.command({"XINFO", "GROUPS", stream});
  if (!groups) return groups.error();
  if (groups->is_error()) return 0;            // no such stream
  std::map<std::string, std::string> applied;  // group -> the position it reported applied
  auto reported = client.command({"HGETALL", applied_key(stream)});
  if (!reported) return reported.error();
  for (std::size_t i = 0; !reported->is_error() && i + 1 < reported->elements.size(); i += 2) {
    applied[reported->elements[i].str] = reported->elements[i + 1].str;
  }
  std::optional<std::pair<std::uint64_t, std::uint64_t>> safe;
  for (const auto& g : parse_groups(*groups)) {
    // The first entry this group still needs: its oldest pending one, else the one after the
    // last delivered.
    std::string needed = id_after(g.last_delivered);
    if (g.pending > 0) {
      auto p = client.command({"XPENDING", stream, g.name});
      if (!p) return p.error();
      if (!p->is_error() && p->elements.size() >= 2 && !p->elements[1].is_nil()) {
        needed = p->elements[1].str;
      }
    }
    // A group whose reader keeps its own positions (NOACK) needs what follows the position it
    // last reported applied, whatever was delivered since.
    if (const auto a = applied.find(g.name);
        a != applied.end() && id_less(id_after(a->second), needed)) {
      needed = id_after(a->second);
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
