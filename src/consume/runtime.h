// The consumer runtime: a loop that applies each event of a consumer group exactly once.
//
//   poll a batch -> group by tenant -> per tenant, one PostgreSQL transaction:
//     BEGIN; app.tenant_id = tenant; INSERT the batch's inbox rows ON CONFLICT DO NOTHING
//     RETURNING event_id  (one statement: the returned ids are the events never seen before)
//     handler.apply(new events, grouped by user)              (the effect, same transaction)
//   COMMIT -> the handler's post-commit Redis commands (cache DEL, PUBLISH) -> ack the batch
//
// Round trips: each is a wake-up of two processes, which on a busy machine costs more than
// the work. The handler's first reads (Handler::prefetch()) go in the inbox statement's round
// trip, and a handler may send COMMIT with its last write (TenantBatch::commit), so the
// portfolio worker's transaction takes two round trips when none of its events was seen before.
//
// Reading after an event (Handler::reads_state()): PostgreSQL makes a commit decodable before
// it is visible to other sessions (for as long as a synchronous-replication wait lasts), so
// the relay can publish an event whose write the handler cannot see yet. In the same round trip
// as the inbox statement the runtime checks that every event's transaction is visible in the
// snapshot (source.xid per pg_visible_in_snapshot, else the event's outbox row); when one is
// not, the transaction is rolled back and retried after a short backoff, indefinitely.
//
// Post-commit commands are part of the effect: when Redis fails them they are retried with
// backoff before the batch is acknowledged, and a redelivered event (whose inbox row exists:
// its previous delivery may have died between the commit and these commands) has them issued
// again (Handler::after_redelivery()).
//
// Exactly-once effects follow from the inbox row and the effect committing together: a
// redelivered event finds its row and is counted as a duplicate, never applied again. The bus
// is acknowledged only after the commit, so a crash at any instant means redelivery, never loss.
//
// Handlers that recalculate per user (locks_users()) get, per user, a fenced lock
// (consume/fenced_lock.h) taken before the transaction; the token travels with the user's
// events and the handler's conditional write reports users fenced off by a newer token
// (ApplyOutcome::fenced): the transaction is rolled back and retried with fresh tokens. Locks
// are taken without waiting: users whose lock is busy are applied in a later round of the
// same batch, so two workers never wait on each other while holding locks.
//
// Failures: kUnavailable from the handler or the servers is transient (connection lost,
// serialization failure): the same work is retried with backoff, indefinitely, and nothing is
// acknowledged meanwhile. Any other error, or an exception, is the events' fault: the batch is
// rolled back and its units (one user's events when the handler locks users, else one event) are
// retried one by one, up to max_attempts with exponential backoff and jitter; a unit still failing
// is dead-lettered (an event_dlq row per event, no inbox row, and a message on events.dlq) and
// acknowledged, so it never blocks other users. `hashinsight dlq replay` re-publishes it. A
// delivery that cannot be parsed is dead-lettered at once.
//
// A message that kills its consumer (crash, kill -9, out of memory) is redelivered to the next
// one; so that it cannot kill every consumer in turn forever, a batch that may hold such a
// message (Redis: an entry delivered before, per XAUTOCLAIM's delivery count; Kafka: offsets
// of a batch whose processing never finished, per a marker in Redis) is processed one delivery
// at a time (in random order), each attempt counted in Redis (per group, topic, partition and
// position) from the moment it runs until it finishes; time spent waiting (for a lock, a
// backoff) is not counted. A delivery attempted that way max_crashes times without finishing
// is dead-lettered without another attempt.
//
// Acknowledgements that fail are kept and sent again with the next batch's, after the next
// poll (Kafka: a member must keep polling to stay in, or rejoin, its group; a later offset
// commit supersedes an earlier one).
//
// Threading: run() owns its connections and runs on the caller's thread; stats() may be read
// from any thread. A stop request is honoured between batches (the batch in hand is finished,
// committed and acknowledged first) and during backoff waits (then nothing of the batch in hand
// is acknowledged; its redelivery is deduplicated).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "bus/bus.h"
#include "consume/event.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/result.h"
#include "pg/connection.h"

namespace hi::consume {

// The new events of one user within a tenant's batch (delivery order).
struct UserEvents {
  std::string user_id;             // "" for events without a user
  std::int64_t fencing_token = 0;  // > 0 when the handler locks users
  std::vector<const Event*> events;
};

struct TenantBatch {
  std::string tenant_id;
  std::vector<UserEvents> users;  // ordered by user id
  // The results of Handler::prefetch()'s statements for exactly these users and events, run in
  // the inbox statement's round trip; empty when they were not run (some events were
  // redelivered, or the handler prefetches nothing): apply() then reads for itself.
  std::span<const pg::QueryResult> prefetched;
  // True: apply() ends the transaction. It commits with its last statement (one round trip
  // less), or rolls back when its write was fenced off, and says so in ApplyOutcome::ended. A
  // handler that ignores it leaves the COMMIT to the runtime.
  bool commit = false;
};

// A Redis command for after the commit, e.g. {"DEL", "user_portfolio:101"}.
using RedisCommand = std::vector<std::string>;

struct ApplyOutcome {
  // Users whose write was rejected because the stored row carries a newer token:
  // (user, stored token). Non-empty -> rollback, raise the fences, retry.
  std::vector<std::pair<std::string, std::int64_t>> fenced;
  // Pipelined after the commit (cache invalidation, change notices).
  std::vector<RedisCommand> after_commit;
  // apply() ended the transaction (TenantBatch::commit): committed, or rolled back when
  // `fenced` is not empty.
  bool ended = false;
};

class Handler {
 public:
  virtual ~Handler() = default;
  // True: take lock:recalc:{user_id} with a fencing token for each user of a batch.
  virtual bool locks_users() const { return false; }
  // True: apply() reads database state that the events' own transactions wrote (the runtime
  // waits until those transactions are visible; see the header comment).
  virtual bool reads_state() const { return false; }
  // Called once per new database connection (prepared statements).
  virtual Status prepare(pg::Connection& /*conn*/) { return {}; }
  // Called with each polled batch before it is grouped by tenant, outside any transaction:
  // may fill in what parsing could not know (the audit worker finds the tenant of a deleted
  // row whose old image carries only its key). Errors are logged; the events go on as parsed.
  virtual Status resolve(pg::Connection& /*conn*/, std::vector<Event>& /*events*/) { return {}; }
  // Reads for apply() to send with the inbox statement, given the batch as it will be when all
  // of its events are new (no fencing tokens yet); they run after the visibility check, in the
  // tenant's transaction. Their results come back in TenantBatch::prefetched. Nothing by
  // default.
  virtual std::vector<pg::Statement> prefetch(const TenantBatch& /*batch*/) { return {}; }
  // Applies the batch's new events inside the open tenant transaction. kUnavailable =
  // transient; any other error = these events failed (see the header comment).
  virtual Result<ApplyOutcome> apply(pg::Connection& conn, const TenantBatch& batch) = 0;
  // The post-commit commands to issue again for events applied by an earlier delivery (inside
  // the tenant transaction; `batch` holds those events). Errors as for apply().
  virtual Result<std::vector<RedisCommand>> after_redelivery(pg::Connection& /*conn*/,
                                                             const TenantBatch& /*batch*/) {
    return std::vector<RedisCommand>{};
  }
};

struct RuntimeOptions {
  std::string name;  // consumer_name of the inbox and the DLQ; the group name by convention
  bus::BusOptions bus;
  bus::ConsumerOptions consumer;  // group, instance name, topics, claim_idle
  std::string database_url;
  std::string db_role = "hashinsight_app";
  std::string redis_url;  // locks, post-commit commands, status
  std::size_t batch_size = 512;
  std::chrono::milliseconds poll_timeout{500};
  // After the first delivery of a batch, keep polling this long for more (up to batch_size)
  // before applying it: fewer, larger transactions for a consumer off the page's path (as
  // Kafka's fetch.max.wait.ms). 0: apply what one poll returned at once.
  std::chrono::milliseconds linger{0};
  int max_attempts = 3;
  // A delivery whose attempts on its own ended the consumer this many times is parked.
  int max_crashes = 3;
  std::chrono::milliseconds backoff_base{100};
  std::chrono::milliseconds backoff_max{5000};
  std::chrono::milliseconds lock_lease{10000};
  std::string dlq_topic = "events.dlq";
  std::chrono::milliseconds status_interval{1000};  // 0 = no status hash
};

struct RuntimeStats {
  std::atomic<std::uint64_t> deliveries{0};     // messages received
  std::atomic<std::uint64_t> applied{0};        // events applied (inbox rows inserted)
  std::atomic<std::uint64_t> duplicates{0};     // deliveries whose inbox row existed
  std::atomic<std::uint64_t> dead_lettered{0};  // events parked in the DLQ
  std::atomic<std::uint64_t> not_visible{0};    // attempts that waited for a commit to show
  std::atomic<std::uint64_t> retries{0};        // transaction attempts that were retried
  std::atomic<std::uint64_t> fenced{0};         // writes rejected by a fencing token
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::int64_t> last_commit_unix_us{0};
  std::atomic<std::int64_t> lag{-1};  // last measured group lag
  // Where the time goes (nanoseconds, summed over batches): waiting for the bus, locks, the
  // inbox statement, the handler, COMMIT, post-commit Redis commands, acknowledgements.
  std::atomic<std::int64_t> poll_ns{0}, lock_ns{0}, inbox_ns{0}, handler_ns{0}, commit_ns{0},
      after_commit_ns{0}, ack_ns{0};
};

class Runtime {
 public:
  Runtime(RuntimeOptions options, Handler& handler, Metrics& metrics, Logger log);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Connects (retrying while the servers are unreachable), then consumes until `stop`.
  // Returns an error only for a permanent problem (bad configuration, fatal bus error).
  Status run(std::stop_token stop);

  const RuntimeStats& stats() const { return stats_; }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  RuntimeStats stats_;
};

}  // namespace hi::consume
