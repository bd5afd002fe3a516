// The routes that store secrets (POST /api/hosting/miners, PUT/GET
// /api/treasury/exchange-keys/:exchange) against a real PostgreSQL, through `hashinsight api`:
// the raw rows are read with SQL and opened with the vault library on the master keys the API
// created in the fixture's data directory. A secret must open to what was sent and appear
// nowhere else: not in the row's other bytes, the event, the audit row, a response or the log.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/process.h"
#include "core/strings.h"
#include "support/api_fixture.h"
#include "vault/vault.h"

namespace hi {
namespace {

using nlohmann::json;
using test::TestServers;

// Every plaintext sent carries this marker, so a leak is easy to grep for.
constexpr const char* kMarker = "S3CRET-";

std::string unhex(std::string_view text) { return hex_decode(text).value_or(""); }

std::string miner_body(const std::string& serial, const std::string& password) {
  return json{{"serial", serial},
              {"site", "Site A"},
              {"model_id", 1},
              {"pool",
               {{"url", "stratum+tcp://pool.example:3333"},
                {"worker", "acct." + serial},
                {"password", password}}}}
      .dump();
}

std::string key_body(const std::string& key, const std::string& secret) {
  return json{{"key", key}, {"secret", secret}}.dump();
}

class ApiSecretsTest : public test::ApiFixture {
 protected:
  // The master keys the API created (call after its first sealed write), freshly read.
  static Result<vault::KeyRing> ring() {
    return vault::KeyRing::open(data_dir() + "/secrets", /*create_if_missing=*/false);
  }

  // miners.credentials_enc of `id`, as bytes.
  std::string miner_blob(std::int64_t id) {
    auto r = owner_.exec("SELECT encode(credentials_enc, 'hex') FROM miners WHERE id = $1",
                         {std::to_string(id)});
    EXPECT_TRUE(r.ok() && r->rows() == 1);
    return r.ok() && r->rows() == 1 ? unhex(r->text(0, 0)) : std::string();
  }

  // The password a hosted miner's credentials open to (empty when they do not).
  std::string open_password(const vault::KeyRing& ring, std::int64_t id) {
    auto opened = vault::open(ring, miner_blob(id), vault::miner_credentials_id(id));
    EXPECT_TRUE(opened.ok()) << "miner " << id << ": "
                             << (opened.ok() ? "" : opened.error().message);
    if (!opened.ok()) return {};
    return json::parse(*opened).value("password", "");
  }

  // The text of every event and audit row.
  std::string events_and_audit_text() {
    auto r = owner_.exec(
        "SELECT coalesce((SELECT string_agg(o::text, E'\\n') FROM event_outbox o), '') || "
        "coalesce((SELECT string_agg(a::text, E'\\n') FROM audit_logs a), '')");
    EXPECT_TRUE(r.ok());
    return r.ok() ? std::string(r->text(0, 0)) : std::string();
  }

  const std::string token_ =
      token("101", "1", {"miners:write", "portfolio:read", "treasury:trade"});
};

TEST_F(ApiSecretsTest, AHostedMinersPasswordIsSealedAndAppearsNowhereElse) {
  const std::string password = std::string(kMarker) + "pool-pw-1";
  auto r = call("POST", "/api/hosting/miners", miner_body("HOST-1", password), auth(token_));
  ASSERT_EQ(r.status, 201) << r.body;
  const json b = body_of(r);
  const std::int64_t id = b["id"].get<std::int64_t>();
  EXPECT_EQ(b["serial"], "HOST-1");
  EXPECT_EQ(b["site"], "Site A");
  EXPECT_EQ(b["model_id"], 1);
  EXPECT_EQ(b["pool"], (json{{"url", "stratum+tcp://pool.example:3333"},
                             {"worker", "acct.HOST-1"},
                             {"password_set", true}}));
  EXPECT_TRUE(b.contains("event_id") && b.contains("seq")) << r.body;
  EXPECT_EQ(r.body.find(kMarker), std::string::npos);

  // The row: url and worker in clear, the password only sealed, the version the blob's.
  auto row = owner_.exec(
      "SELECT tenant_id, user_id, serial, site, model_id, pool_url, pool_worker, key_version, "
      "m::text FROM miners m WHERE id = $1",
      {std::to_string(id)});
  ASSERT_TRUE(row.ok());
  ASSERT_EQ(row->rows(), 1);
  EXPECT_EQ(row->int64(0, 0), 1);
  EXPECT_EQ(row->int64(0, 1), 101);
  EXPECT_EQ(row->text(0, 2), "HOST-1");
  EXPECT_EQ(row->text(0, 3), "Site A");
  EXPECT_EQ(row->int64(0, 4), 1);
  EXPECT_EQ(row->text(0, 5), "stratum+tcp://pool.example:3333");
  EXPECT_EQ(row->text(0, 6), "acct.HOST-1");
  EXPECT_EQ(row->text(0, 8).find(kMarker), std::string::npos);
  const std::string blob = miner_blob(id);
  EXPECT_EQ(blob.find(kMarker), std::string::npos);
  EXPECT_EQ(blob.find("pool-pw-1"), std::string::npos);
  EXPECT_EQ(row->int64(0, 7), vault::blob_version(blob).value_or(0));

  auto ring_or = ring();
  ASSERT_TRUE(ring_or.ok()) << ring_or.error().message;
  const vault::KeyRing& keys = *ring_or;
  EXPECT_EQ(row->int64(0, 7), keys.current_version());
  EXPECT_EQ(open_password(keys, id), password);

  // The event and the audit row: the safe fields, the password redacted.
  auto ev = owner_.exec(
      "SELECT kind, entity_id, payload::text, payload->>'serial' FROM event_outbox "
      "WHERE entity_id = $1",
      {std::to_string(id)});
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->rows(), 1);
  EXPECT_EQ(ev->text(0, 0), "miner.hosted");
  EXPECT_EQ(ev->text(0, 3), "HOST-1");
  auto audit = owner_.exec(
      "SELECT action, entity, details->'after'->'pool'->>'password', "
      "details->'after'->'pool'->>'url' FROM audit_logs WHERE entity_id = $1",
      {std::to_string(id)});
  ASSERT_TRUE(audit.ok());
  ASSERT_EQ(audit->rows(), 1);
  EXPECT_EQ(audit->text(0, 0), "miner.host");
  EXPECT_EQ(audit->text(0, 1), "miners");
  EXPECT_EQ(audit->text(0, 2), "[redacted]");
  EXPECT_EQ(audit->text(0, 3), "stratum+tcp://pool.example:3333");
  EXPECT_EQ(events_and_audit_text().find(kMarker), std::string::npos);

  // The list shows the pool, never the password.
  auto list = get("/api/hosting/miners", token_);
  ASSERT_EQ(list.status, 200) << list.body;
  ASSERT_EQ(body_of(list).size(), 1u);
  EXPECT_EQ(body_of(list)[0]["pool"]["worker"], "acct.HOST-1");
  EXPECT_EQ(body_of(list)[0]["pool"]["password_set"], true);
  EXPECT_EQ(list.body.find(kMarker), std::string::npos);

  // The same serial again in the tenant: 409 naming it, nothing more written.
  auto dup = call("POST", "/api/hosting/miners", miner_body("HOST-1", password), auth(token_));
  EXPECT_EQ(dup.status, 409) << dup.body;
  EXPECT_EQ(body_of(dup)["error"]["field"], "serial");
  EXPECT_EQ(count("miners"), 1);
  EXPECT_EQ(count("event_outbox"), 1);

  // Another tenant may host the same serial, and does not see the first.
  const std::string other = token("201", "2", {"miners:write", "portfolio:read"});
  auto theirs = call("POST", "/api/hosting/miners", miner_body("HOST-1", password), auth(other));
  EXPECT_EQ(theirs.status, 201) << theirs.body;
  auto their_list = get("/api/hosting/miners", other);
  ASSERT_EQ(body_of(their_list).size(), 1u) << their_list.body;
  EXPECT_NE(body_of(their_list)[0]["id"], id);

  EXPECT_EQ(log_text().find(kMarker), std::string::npos);
}

TEST_F(ApiSecretsTest, AnExchangeKeyIsCreatedThenReplacedInOneRow) {
  const std::string key1 = std::string(kMarker) + "key-one-AAAA";
  const std::string secret1 = std::string(kMarker) + "secret-one";
  auto created =
      call("PUT", "/api/treasury/exchange-keys/kraken", key_body(key1, secret1), auth(token_));
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(body_of(created)["exchange"], "kraken");
  EXPECT_EQ(body_of(created)["key_last4"], "AAAA");
  EXPECT_TRUE(body_of(created).contains("updated_at"));

  const std::string key2 = std::string(kMarker) + "key-two-WXYZ";
  const std::string secret2 = std::string(kMarker) + "secret-two\nwith a second line";
  auto updated = call("PUT", "/api/treasury/exchange-keys/kraken", key_body(key2, secret2),
                      {{"Authorization", "Bearer " + token_}, {"Idempotency-Key", "ek-2"}});
  ASSERT_EQ(updated.status, 200) << updated.body;
  EXPECT_EQ(body_of(updated)["key_last4"], "WXYZ");
  EXPECT_EQ(created.body.find(kMarker), std::string::npos);
  EXPECT_EQ(updated.body.find(kMarker), std::string::npos);
  // A replay answers the same, writing nothing.
  auto replay = call("PUT", "/api/treasury/exchange-keys/kraken", key_body(key2, secret2),
                     {{"Authorization", "Bearer " + token_}, {"Idempotency-Key", "ek-2"}});
  EXPECT_EQ(replay.status, 200);
  EXPECT_EQ(replay.body, updated.body);

  auto row = owner_.exec(
      "SELECT id, tenant_id, user_id, key_last4, key_version, encode(key_enc, 'hex'), "
      "encode(secret_enc, 'hex'), e::text FROM exchange_keys e");
  ASSERT_TRUE(row.ok());
  ASSERT_EQ(row->rows(), 1);
  const std::int64_t id = row->int64(0, 0);
  EXPECT_EQ(row->int64(0, 1), 1);
  EXPECT_EQ(row->int64(0, 2), 101);
  EXPECT_EQ(row->text(0, 3), "WXYZ");
  EXPECT_EQ(row->text(0, 7).find(kMarker), std::string::npos);
  const std::string key_blob = unhex(row->text(0, 5));
  const std::string secret_blob = unhex(row->text(0, 6));
  EXPECT_EQ(key_blob.find(kMarker), std::string::npos);
  EXPECT_EQ(secret_blob.find(kMarker), std::string::npos);
  auto ring_or = ring();
  ASSERT_TRUE(ring_or.ok()) << ring_or.error().message;
  const vault::KeyRing& keys = *ring_or;
  EXPECT_EQ(row->int64(0, 4), keys.current_version());
  EXPECT_EQ(vault::open(keys, key_blob, vault::exchange_key_id(id)).value_or(""), key2);
  EXPECT_EQ(vault::open(keys, secret_blob, vault::exchange_secret_id(id)).value_or(""), secret2);
  // The columns are not interchangeable.
  EXPECT_FALSE(vault::open(keys, key_blob, vault::exchange_secret_id(id)).ok());

  auto shown = get("/api/treasury/exchange-keys/kraken", token_);
  ASSERT_EQ(shown.status, 200) << shown.body;
  const json s = body_of(shown);
  EXPECT_EQ(s["exchange"], "kraken");
  EXPECT_EQ(s["key_last4"], "WXYZ");
  EXPECT_EQ(s["key_version"], keys.current_version());
  EXPECT_TRUE(s.contains("updated_at"));
  EXPECT_FALSE(s.contains("key") || s.contains("secret")) << shown.body;
  EXPECT_EQ(shown.body.find(kMarker), std::string::npos);
  EXPECT_EQ(get("/api/treasury/exchange-keys/binance", token_).status, 404);
  // Another user of the tenant has no key there.
  EXPECT_EQ(get("/api/treasury/exchange-keys/kraken", token("102", "1", {"treasury:trade"})).status,
            404);

  // Two events and audit rows (create, update) with only the exchange and the last 4.
  auto ev = owner_.exec(
      "SELECT kind, payload::text FROM event_outbox WHERE kind = 'treasury.exchange_key_set' "
      "ORDER BY seq");
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->rows(), 2);
  EXPECT_EQ(json::parse(ev->text(1, 1)), (json{{"exchange", "kraken"}, {"key_last4", "WXYZ"}}));
  EXPECT_EQ(count("audit_logs"), 2);
  EXPECT_EQ(events_and_audit_text().find(kMarker), std::string::npos);
  EXPECT_EQ(log_text().find(kMarker), std::string::npos);
}

// `hashinsight keys rotate` (the built binary) while a thread keeps writing secrets through the
// API: afterwards every row opens to what was last written, all on the new version, and the
// API seals under it without a restart.
TEST_F(ApiSecretsTest, RotationWhileTheApiWritesLeavesEveryRecordOnTheNewVersion) {
  std::map<std::int64_t, std::string> passwords;                         // miner id -> password
  std::map<std::string, std::pair<std::string, std::string>> exchanges;  // -> (key, secret)
  auto host = [&](const std::string& serial) {
    const std::string password = std::string(kMarker) + "pw-" + serial;
    auto r = call("POST", "/api/hosting/miners", miner_body(serial, password), auth(token_));
    if (r.status != 201) return "POST " + serial + ": " + std::to_string(r.status) + " " + r.body;
    passwords[body_of(r)["id"].get<std::int64_t>()] = password;
    return std::string();
  };
  auto set_key = [&](const std::string& exchange, int round) {
    const std::string tag = exchange + "-" + std::to_string(round);
    const std::string key = std::string(kMarker) + "key-" + tag + "-Q" + std::to_string(round % 10);
    const std::string secret = std::string(kMarker) + "secret-" + tag;
    auto r =
        call("PUT", "/api/treasury/exchange-keys/" + exchange, key_body(key, secret), auth(token_));
    if (r.status != 200 && r.status != 201) {
      return "PUT " + exchange + ": " + std::to_string(r.status) + " " + r.body;
    }
    exchanges[exchange] = {key, secret};
    return std::string();
  };
  for (int i = 0; i < 60; ++i) ASSERT_EQ(host("PRE-" + std::to_string(i)), "");
  for (int i = 0; i < 5; ++i) ASSERT_EQ(set_key("ex" + std::to_string(i), 0), "");
  auto first = ring();
  ASSERT_TRUE(first.ok()) << first.error().message;
  const std::uint32_t before = first->current_version();

  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::atomic<bool> writer_failed{false};
  std::string writer_error;  // the writer's until joined
  std::thread writer([&] {
    for (int round = 1; !stop.load(); ++round) {
      std::string e = host("LIVE-" + std::to_string(round));
      if (e.empty()) e = set_key("ex" + std::to_string(round % 5), round);
      if (!e.empty()) {
        writer_error = e;
        writer_failed = true;
        return;
      }
      writes.fetch_add(1);
    }
  });
  while (writes.load() < 3 && !writer_failed.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int writes_before = writes.load();
  SpawnOptions o;
  o.argv = {
      test::hashinsight_binary(), "keys", "rotate", "--batch", "20", "--data-dir", data_dir()};
  o.env = {"DATABASE_URL=" + TestServers::get().database_url(),
           "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto rotated = run_command(o, std::chrono::seconds(300));
  const int during = writes.load() - writes_before;
  // A few writes after the rotate, then stop.
  const int after_rotate = writes.load();
  while (writes.load() < after_rotate + 3 && !writer_failed.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  writer.join();
  ASSERT_TRUE(rotated.ok());
  ASSERT_EQ(rotated->status, 0) << rotated->output;
  ASSERT_EQ(writer_error, "");
  EXPECT_GT(during, 0) << "no write while rotate ran";
  EXPECT_EQ(rotated->output.find(kMarker), std::string::npos);

  // Requests after the rotate: sealed under the new version by the running API.
  ASSERT_EQ(host("AFTER-1"), "");
  ASSERT_EQ(set_key("ex-after", 0), "");

  auto ring_or = ring();
  ASSERT_TRUE(ring_or.ok()) << ring_or.error().message;
  const vault::KeyRing& keys = *ring_or;
  const std::uint32_t newest = keys.current_version();
  EXPECT_EQ(newest, before + 1);
  auto miners = owner_.exec("SELECT id, key_version FROM miners ORDER BY id");
  ASSERT_TRUE(miners.ok());
  EXPECT_EQ(miners->rows(), static_cast<int>(passwords.size()));
  for (int r = 0; r < miners->rows(); ++r) {
    const std::int64_t id = miners->int64(r, 0);
    EXPECT_EQ(miners->int64(r, 1), newest) << "miner " << id;
    EXPECT_EQ(vault::blob_version(miner_blob(id)).value_or(0), newest) << "miner " << id;
    EXPECT_EQ(open_password(keys, id), passwords[id]) << "miner " << id;
  }
  auto rows = owner_.exec(
      "SELECT id, exchange, key_version, encode(key_enc, 'hex'), encode(secret_enc, 'hex') "
      "FROM exchange_keys ORDER BY id");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->rows(), static_cast<int>(exchanges.size()));
  for (int r = 0; r < rows->rows(); ++r) {
    const std::int64_t id = rows->int64(r, 0);
    const std::string exchange(rows->text(r, 1));
    const std::string key_blob = unhex(rows->text(r, 3));
    const std::string secret_blob = unhex(rows->text(r, 4));
    EXPECT_EQ(rows->int64(r, 2), newest) << exchange;
    EXPECT_EQ(vault::blob_version(key_blob).value_or(0), newest) << exchange;
    EXPECT_EQ(vault::blob_version(secret_blob).value_or(0), newest) << exchange;
    EXPECT_EQ(vault::open(keys, key_blob, vault::exchange_key_id(id)).value_or("?"),
              exchanges[exchange].first)
        << exchange;
    EXPECT_EQ(vault::open(keys, secret_blob, vault::exchange_secret_id(id)).value_or("?"),
              exchanges[exchange].second)
        << exchange;
  }
  EXPECT_EQ(events_and_audit_text().find(kMarker), std::string::npos);
  EXPECT_EQ(log_text().find(kMarker), std::string::npos);
}

// The library refuses a blob that was tampered with, moved to another record, or names a
// master key version that does not exist (the vault unit tests cover the primitives; these
// are the rows the API wrote).
TEST_F(ApiSecretsTest, TamperedMovedAndUnknownVersionBlobsDoNotOpen) {
  std::int64_t ids[4] = {};
  for (int i = 0; i < 4; ++i) {
    auto r = call("POST", "/api/hosting/miners",
                  miner_body("T-" + std::to_string(i), std::string(kMarker) + std::to_string(i)),
                  auth(token_));
    ASSERT_EQ(r.status, 201) << r.body;
    ids[i] = body_of(r)["id"].get<std::int64_t>();
  }
  auto ring_or = ring();
  ASSERT_TRUE(ring_or.ok()) << ring_or.error().message;
  const vault::KeyRing& keys = *ring_or;
  // A byte of the ciphertext flipped.
  ASSERT_TRUE(owner_
                  .exec("UPDATE miners SET credentials_enc = set_byte(credentials_enc, $2, "
                        "get_byte(credentials_enc, $2) # 1) WHERE id = $1",
                        {std::to_string(ids[0]), std::to_string(vault::kCiphertextOffset + 2)})
                  .ok());
  auto tampered = vault::open(keys, miner_blob(ids[0]), vault::miner_credentials_id(ids[0]));
  ASSERT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.error().code, Code::kDataLoss);
  // Miner 1's blob copied onto miner 2.
  ASSERT_TRUE(owner_
                  .exec("UPDATE miners SET credentials_enc = (SELECT credentials_enc FROM miners "
                        "WHERE id = $1) WHERE id = $2",
                        {std::to_string(ids[1]), std::to_string(ids[2])})
                  .ok());
  auto moved = vault::open(keys, miner_blob(ids[2]), vault::miner_credentials_id(ids[2]));
  ASSERT_FALSE(moved.ok());
  EXPECT_EQ(moved.error().code, Code::kDataLoss);
  EXPECT_TRUE(vault::open(keys, miner_blob(ids[1]), vault::miner_credentials_id(ids[1])).ok());
  // A version that is on no disk (bytes 1..5, big-endian).
  ASSERT_TRUE(owner_
                  .exec("UPDATE miners SET credentials_enc = set_byte(credentials_enc, 4, 250) "
                        "WHERE id = $1",
                        {std::to_string(ids[3])})
                  .ok());
  auto unknown = vault::open(keys, miner_blob(ids[3]), vault::miner_credentials_id(ids[3]));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, Code::kNotFound);
  EXPECT_NE(unknown.error().message.find("250"), std::string::npos) << unknown.error().message;
  EXPECT_EQ(unknown.error().message.find(kMarker), std::string::npos);
}

TEST_F(ApiSecretsTest, BadBodiesAreRefusedNamingTheFieldAndWriteNothing) {
  const std::string long_password = std::string(kMarker) + std::string(200, 'p');
  json ok_miner = json::parse(miner_body("BAD-1", std::string(kMarker) + "pw"));
  auto with = [&](const std::string& pointer, const json& value) {
    json b = ok_miner;
    b[json::json_pointer(pointer)] = value;
    return b.dump();
  };
  auto without = [&](const std::string& pointer) {
    json b = ok_miner;
    b.at(json::json_pointer(pointer.substr(0, pointer.rfind('/'))))
        .erase(pointer.substr(pointer.rfind('/') + 1));
    return b.dump();
  };
  struct Case {
    std::string method, path, body, field;
  };
  const std::string miners = "/api/hosting/miners";
  const std::string kraken = "/api/treasury/exchange-keys/kraken";
  const std::string good_key = key_body(std::string(kMarker) + "key-1234", "secret-12345678");
  const std::vector<Case> cases = {
      {"POST", miners, with("/pool/password", long_password), "pool.password"},
      {"POST", miners, with("/pool/password", ""), "pool.password"},
      {"POST", miners, without("/pool/password"), "pool.password"},
      {"POST", miners, with("/pool/password", 12345), "pool.password"},
      {"POST", miners, with("/pool/url", "http://pool.example"), "pool.url"},
      {"POST", miners, with("/pool/url", "stratum+tcp://user:" + std::string(kMarker) + "@pool"),
       "pool.url"},
      {"POST", miners, with("/pool/worker", std::string(201, 'w')), "pool.worker"},
      {"POST", miners, with("/pool/extra", 1), "pool.extra"},
      {"POST", miners, with("/pool", "stratum+tcp://pool.example"), "pool"},
      {"POST", miners, without("/pool"), "pool"},
      {"POST", miners, with("/serial", ""), "serial"},
      {"POST", miners, with("/serial", std::string(101, 's')), "serial"},
      {"POST", miners, without("/serial"), "serial"},
      {"POST", miners, with("/site", std::string(101, 's')), "site"},
      {"POST", miners, with("/model_id", 999999), "model_id"},
      {"POST", miners, with("/model_id", "1"), "model_id"},
      {"PUT", "/api/treasury/exchange-keys/Kraken", good_key, "exchange"},
      {"PUT", "/api/treasury/exchange-keys/-kraken", good_key, "exchange"},
      {"PUT", "/api/treasury/exchange-keys/" + std::string(65, 'k'), good_key, "exchange"},
      {"PUT", kraken, key_body("short", "secret-12345678"), "key"},
      {"PUT", kraken, key_body(std::string(257, 'k'), "secret-12345678"), "key"},
      {"PUT", kraken, key_body("key with spaces", "secret-12345678"), "key"},
      {"PUT", kraken, key_body("key-12345678", "short"), "secret"},
      {"PUT", kraken, key_body("key-12345678", std::string(513, 's')), "secret"},
      {"PUT", kraken, json{{"key", "key-12345678"}}.dump(), "secret"},
      {"PUT", kraken, json{{"key", "key-12345678"}, {"secret", "secret-1234"}, {"x", 1}}.dump(),
       "x"},
  };
  for (const auto& c : cases) {
    auto r = call(c.method, c.path, c.body, auth(token_));
    EXPECT_EQ(r.status, 400) << c.method << " " << c.path << " " << c.body << "\n" << r.body;
    EXPECT_EQ(body_of(r)["error"]["field"], c.field) << c.body << "\n" << r.body;
    EXPECT_EQ(r.body.find(kMarker), std::string::npos) << r.body;
  }
  EXPECT_EQ(get("/api/treasury/exchange-keys/UPPER", token_).status, 400);

  // Scopes: hosting needs miners:write, exchange keys treasury:trade.
  const std::string viewer = token("105", "1", {"portfolio:read"});
  EXPECT_EQ(call("POST", miners, ok_miner.dump(), auth(viewer)).status, 403);
  EXPECT_EQ(call("PUT", kraken, good_key, auth(viewer)).status, 403);
  EXPECT_EQ(get(kraken, viewer).status, 403);
  const std::string miners_only = token("101", "1", {"miners:write"});
  EXPECT_EQ(call("PUT", kraken, good_key, auth(miners_only)).status, 403);
  EXPECT_EQ(get(miners, miners_only).status, 403);

  EXPECT_EQ(count("miners"), 0);
  EXPECT_EQ(count("exchange_keys"), 0);
  EXPECT_EQ(count("event_outbox"), 0);
  EXPECT_EQ(count("audit_logs"), 0);
  EXPECT_EQ(count("api_idempotency_records"), 0);
  EXPECT_EQ(log_text().find(kMarker), std::string::npos);
}

}  // namespace
}  // namespace hi
