// `hashinsight keys rotate` and `keys status` against a real PostgreSQL: rows sealed by the
// library are re-wrapped by the built binary while another thread, acting as the API does
// (hashinsight_app, its own key ring on the same directory), keeps inserting and updating
// sealed rows; afterwards every row opens to what was last written, every row is on the newest
// master key, and neither the tables' text nor pg_dump shows a plaintext.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/log.h"
#include "core/process.h"
#include "core/strings.h"
#include "pg/connection.h"
#include "pg/transaction.h"
#include "schema/seed.h"
#include "support/servers.h"
#include "vault/vault.h"

namespace hi {
namespace {

namespace fs = std::filesystem;
using test::TestServers;

// Every plaintext carries this marker, so a leak is easy to find in any dump.
constexpr const char* kMarker = "PLAINTEXT-";

std::string unhex(std::string_view text) { return hex_decode(text).value_or(""); }

CommandResult run(const std::string& data_dir, std::vector<std::string> args) {
  SpawnOptions o;
  o.argv = {test::hashinsight_binary()};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.argv.insert(o.argv.end(), {"--data-dir", data_dir});
  o.env = {"DATABASE_URL=" + TestServers::get().database_url(),
           "REDIS_URL=", "HI_DATA_DIR=", "LOG_FORMAT=text"};
  auto r = run_command(o, std::chrono::seconds(300));
  EXPECT_TRUE(r.ok());
  return r.ok() ? *r : CommandResult{};
}

// What a row should open to, as last committed.
struct Expected {
  std::map<std::int64_t, std::pair<std::string, std::string>> miners;  // id -> (tenant, secret)
  // id -> (tenant, key, secret)
  std::map<std::int64_t, std::tuple<std::string, std::string, std::string>> exchange_keys;
};

// Seals and writes rows as the API would: the id first, then the blob sealed for it.
class Writer {
 public:
  Writer(pg::Connection& conn, const vault::KeyRing& ring) : conn_(conn), ring_(ring) {}

  Status insert_miner(const std::string& tenant, const std::string& user, const std::string& serial,
                      Expected& expected) {
    std::int64_t id = 0;
    std::string secret;
    auto r = pg::in_transaction(conn_, tenant, [&](pg::Connection& c) -> Status {
      auto next = c.exec("SELECT nextval(pg_get_serial_sequence('miners', 'id'))");
      if (!next) return next.error();
      id = next->int64(0, 0);
      secret = kMarker + std::string("miner-") + std::to_string(id) + "-" + serial;
      auto blob = vault::seal(ring_, secret, vault::miner_credentials_id(id));
      if (!blob) return blob.error();
      auto ins = c.exec(
          "INSERT INTO miners (id, tenant_id, user_id, model_id, serial, pool_url, pool_worker, "
          "credentials_enc, key_version) VALUES ($1, $2, $3, (SELECT min(id) FROM miner_models), "
          "$4, 'stratum+tcp://pool.example:3333', $5, decode($6, 'hex'), $7)",
          {std::to_string(id), tenant, user, serial, "worker." + serial, hex_encode(*blob),
           std::to_string(*vault::blob_version(*blob))});
      if (!ins) return ins.error();
      return ok_status();
    });
    if (r) expected.miners[id] = {tenant, secret};
    return r;
  }

  Status update_miner(std::int64_t id, const std::string& tenant, int round, Expected& expected) {
    const std::string secret =
        kMarker + std::string("miner-") + std::to_string(id) + "-round-" + std::to_string(round);
    auto r = pg::in_transaction(conn_, tenant, [&](pg::Connection& c) -> Status {
      auto blob = vault::seal(ring_, secret, vault::miner_credentials_id(id));
      if (!blob) return blob.error();
      auto up = c.exec(
          "UPDATE miners SET credentials_enc = decode($1, 'hex'), key_version = $2 WHERE id = $3",
          {hex_encode(*blob), std::to_string(*vault::blob_version(*blob)), std::to_string(id)});
      if (!up) return up.error();
      if (up->affected() != 1) return internal_error("miner " + std::to_string(id) + " not found");
      return ok_status();
    });
    if (r) expected.miners[id] = {tenant, secret};
    return r;
  }

  // Inserts the key of (user, exchange), or replaces it: the row's id is taken (and the row
  // locked) before sealing, so both blobs are sealed for the id they are stored under.
  Status upsert_exchange_key(const std::string& tenant, const std::string& user,
                             const std::string& exchange, int round, Expected& expected) {
    std::int64_t id = 0;
    std::string key, secret;
    auto r = pg::in_transaction(conn_, tenant, [&](pg::Connection& c) -> Status {
      auto found = c.exec(
          "SELECT id FROM exchange_keys WHERE tenant_id = $1 AND user_id = $2 AND exchange = $3 "
          "FOR UPDATE",
          {tenant, user, exchange});
      if (!found) return found.error();
      const bool exists = !found->empty();
      if (exists) {
        id = found->int64(0, 0);
      } else {
        auto next = c.exec("SELECT nextval(pg_get_serial_sequence('exchange_keys', 'id'))");
        if (!next) return next.error();
        id = next->int64(0, 0);
      }
      const std::string tag = std::to_string(id) + "-" + std::to_string(round);
      key = kMarker + std::string("apikey-") + tag + "-ABCD";
      secret = kMarker + std::string("apisecret-") + tag;
      auto key_blob = vault::seal(ring_, key, vault::exchange_key_id(id));
      if (!key_blob) return key_blob.error();
      auto secret_blob = vault::seal(ring_, secret, vault::exchange_secret_id(id));
      if (!secret_blob) return secret_blob.error();
      const std::uint32_t version =
          std::min(*vault::blob_version(*key_blob), *vault::blob_version(*secret_blob));
      auto w = exists ? c.exec(
                            "UPDATE exchange_keys SET key_enc = decode($1, 'hex'), secret_enc = "
                            "decode($2, 'hex'), key_last4 = 'ABCD', key_version = $3, updated_at "
                            "= now() WHERE id = $4",
                            {hex_encode(*key_blob), hex_encode(*secret_blob),
                             std::to_string(version), std::to_string(id)})
                      : c.exec(
                            "INSERT INTO exchange_keys (id, tenant_id, user_id, exchange, key_enc, "
                            "secret_enc, key_last4, key_version) VALUES ($1, $2, $3, $4, "
                            "decode($5, 'hex'), decode($6, 'hex'), 'ABCD', $7)",
                            {std::to_string(id), tenant, user, exchange, hex_encode(*key_blob),
                             hex_encode(*secret_blob), std::to_string(version)});
      if (!w) return w.error();
      return ok_status();
    });
    if (r) expected.exchange_keys[id] = {tenant, key, secret};
    return r;
  }

 private:
  pg::Connection& conn_;
  const vault::KeyRing& ring_;
};

class KeysTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto owner = TestServers::get().owner();
    auto s = schema::seed(owner, Logger("test"));
    ASSERT_TRUE(s.ok()) << s.error().message;
  }

  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    owner_ = TestServers::get().owner();
    // Each test starts from empty tables (they share one database).
    ASSERT_TRUE(owner_.exec("DELETE FROM exchange_keys").ok());
    ASSERT_TRUE(owner_.exec("DELETE FROM miners WHERE key_version IS NOT NULL").ok());
  }

  // Every sealed row opens to what was last written, under version `version`.
  void expect_all_open(const vault::KeyRing& ring, const Expected& expected,
                       std::uint32_t version) {
    auto miners = owner_.exec(
        "SELECT id, tenant_id::text, encode(credentials_enc, 'hex'), key_version FROM miners "
        "WHERE key_version IS NOT NULL ORDER BY id");
    ASSERT_TRUE(miners.ok()) << miners.error().message;
    EXPECT_EQ(miners->rows(), static_cast<int>(expected.miners.size()));
    for (int r = 0; r < miners->rows(); ++r) {
      const std::int64_t id = miners->int64(r, 0);
      const std::string blob = unhex(miners->text(r, 2));
      EXPECT_EQ(miners->int64(r, 3), version) << "miner " << id;
      EXPECT_EQ(vault::blob_version(blob).value_or(0), version) << "miner " << id;
      auto opened = vault::open(ring, blob, vault::miner_credentials_id(id));
      ASSERT_TRUE(opened.ok()) << "miner " << id << ": " << opened.error().message;
      auto it = expected.miners.find(id);
      ASSERT_NE(it, expected.miners.end()) << id;
      EXPECT_EQ(*opened, it->second.second) << "miner " << id;
      EXPECT_EQ(miners->text(r, 1), it->second.first);
    }

    auto keys = owner_.exec(
        "SELECT id, encode(key_enc, 'hex'), encode(secret_enc, 'hex'), key_version "
        "FROM exchange_keys ORDER BY id");
    ASSERT_TRUE(keys.ok()) << keys.error().message;
    EXPECT_EQ(keys->rows(), static_cast<int>(expected.exchange_keys.size()));
    for (int r = 0; r < keys->rows(); ++r) {
      const std::int64_t id = keys->int64(r, 0);
      const std::string key_blob = unhex(keys->text(r, 1));
      const std::string secret_blob = unhex(keys->text(r, 2));
      EXPECT_EQ(keys->int64(r, 3), version) << "exchange key " << id;
      EXPECT_EQ(vault::blob_version(key_blob).value_or(0), version);
      EXPECT_EQ(vault::blob_version(secret_blob).value_or(0), version);
      auto it = expected.exchange_keys.find(id);
      ASSERT_NE(it, expected.exchange_keys.end()) << id;
      auto key = vault::open(ring, key_blob, vault::exchange_key_id(id));
      ASSERT_TRUE(key.ok()) << "exchange key " << id << ": " << key.error().message;
      EXPECT_EQ(*key, std::get<1>(it->second));
      auto secret = vault::open(ring, secret_blob, vault::exchange_secret_id(id));
      ASSERT_TRUE(secret.ok()) << "exchange key " << id << ": " << secret.error().message;
      EXPECT_EQ(*secret, std::get<2>(it->second));
      // Columns are not interchangeable: the key blob does not open as the secret.
      EXPECT_FALSE(vault::open(ring, key_blob, vault::exchange_secret_id(id)).ok());
    }
  }

  // The tables as text (bytea in hex) and as pg_dump writes them hold no plaintext, neither
  // as text nor hex-encoded.
  void expect_no_plaintext_in_dumps() {
    auto text = owner_.exec(
        "SELECT coalesce((SELECT string_agg(m::text, E'\\n') FROM miners m), '') || "
        "coalesce((SELECT string_agg(e::text, E'\\n') FROM exchange_keys e), '')");
    ASSERT_TRUE(text.ok()) << text.error().message;
    const std::string rows(text->text(0, 0));
    EXPECT_GT(rows.size(), 1000u);
    EXPECT_EQ(rows.find(kMarker), std::string::npos);
    EXPECT_EQ(rows.find(hex_encode(kMarker)), std::string::npos);

    std::string bindir = "/usr/lib/postgresql/15/bin";
    SpawnOptions pg_config;
    pg_config.argv = {"pg_config", "--bindir"};
    if (auto pc = run_command(pg_config); pc.ok() && pc->status == 0) {
      bindir = std::string(pc->output.substr(0, pc->output.find('\n')));
    }
    if (!fs::exists(bindir + "/pg_dump")) {
      GTEST_SKIP() << "no pg_dump in " << bindir;
    }
    SpawnOptions o;
    o.argv = {bindir + "/pg_dump", "--data-only", "--table=miners", "--table=exchange_keys",
              "--dbname=" + TestServers::get().database_url()};
    auto dump = run_command(o, std::chrono::seconds(120));
    ASSERT_TRUE(dump.ok());
    ASSERT_EQ(dump->status, 0) << dump->output.substr(0, 2000);
    EXPECT_NE(dump->output.find("COPY public.exchange_keys"), std::string::npos);
    EXPECT_EQ(dump->output.find(kMarker), std::string::npos);
    EXPECT_EQ(dump->output.find(hex_encode(kMarker)), std::string::npos);
  }

  test::TempDir dir_;
  std::string data_;
  pg::Connection owner_;
};

TEST_F(KeysTest, RotateRewrapsEveryRowWhileWritersRun) {
  auto ring = vault::KeyRing::open(data_ + "/secrets", /*create_if_missing=*/true);
  ASSERT_TRUE(ring.ok()) << ring.error().message;
  ASSERT_EQ(ring->current_version(), 1u);

  // Version 1 rows of both kinds in both tenants, as the owner.
  Expected expected;
  Writer seeder(owner_, *ring);
  const std::pair<const char*, const char*> users[] = {
      {"1", "101"}, {"1", "102"}, {"2", "201"}, {"2", "202"}};
  for (int i = 0; i < 1100; ++i) {
    const auto& [tenant, user] = users[i % 4];
    auto s = seeder.insert_miner(tenant, user, "SN-" + std::to_string(i), expected);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  for (int i = 0; i < 320; ++i) {
    const auto& [tenant, user] = users[i % 4];
    auto s = seeder.upsert_exchange_key(tenant, user, "ex" + std::to_string(i / 4), 0, expected);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }

  // The API's stand-in: hashinsight_app, its own ring on the same directory, loaded before the
  // rotation adds a version.
  auto api_ring = vault::KeyRing::open(data_ + "/secrets", /*create_if_missing=*/false);
  ASSERT_TRUE(api_ring.ok());
  std::vector<std::pair<std::int64_t, std::string>> existing_miners;
  for (const auto& [id, row] : expected.miners) existing_miners.emplace_back(id, row.first);
  Expected written;  // owned by the writer thread until it is joined
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0};
  std::atomic<bool> writer_failed{false};
  std::string writer_error;  // written by the writer, read after join
  auto app = TestServers::get().app();
  std::thread writer([&] {
    Writer w(app, *api_ring);
    std::mt19937 rng(7);
    for (int round = 1; !stop.load(); ++round) {
      const auto& [tenant, user] = users[round % 4];
      const auto& [id, miner_tenant] = existing_miners[rng() % existing_miners.size()];
      Status s = w.update_miner(id, miner_tenant, round, written);
      if (s) s = w.insert_miner(tenant, user, "LIVE-" + std::to_string(round), written);
      if (s) {
        s = w.upsert_exchange_key(tenant, user, "ex" + std::to_string(rng() % 100), round, written);
      }
      if (!s) {
        writer_error = s.error().message;
        writer_failed = true;
        return;
      }
      writes.fetch_add(1);
    }
  });
  while (writes.load() < 5 && !writer_failed.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int before = writes.load();
  auto rotated = run(data_, {"keys", "rotate", "--batch", "100"});
  const int during = writes.load() - before;
  stop = true;
  writer.join();
  ASSERT_TRUE(writer_error.empty()) << writer_error;
  ASSERT_EQ(rotated.status, 0) << rotated.output;
  EXPECT_GT(during, 0) << "the writer made no write while rotate ran";
  // One summary line, naming the new version and nothing secret.
  EXPECT_NE(rotated.output.find("keys rotate: master key version 2 (added)"), std::string::npos)
      << rotated.output;
  EXPECT_NE(rotated.output.find("0 failed; 0 below version 2 remain"), std::string::npos)
      << rotated.output;
  EXPECT_EQ(rotated.output.find(kMarker), std::string::npos);

  for (auto& [id, row] : written.miners) expected.miners[id] = row;
  for (auto& [id, row] : written.exchange_keys) expected.exchange_keys[id] = row;
  ASSERT_TRUE(ring->reload().ok());
  EXPECT_EQ(ring->versions(), (std::vector<std::uint32_t>{1, 2}));
  expect_all_open(*ring, expected, 2);

  auto status = run(data_, {"keys", "status", "--json"});
  ASSERT_EQ(status.status, 0) << status.output;
  const auto j = nlohmann::json::parse(status.output, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << status.output;
  EXPECT_EQ(j.value("current_version", 0), 2);
  EXPECT_EQ(j.value("rows_below_current", -1), 0);
  EXPECT_EQ(j.value("rows_without_key", -1), 0);
  ASSERT_EQ(j["versions"].size(), 2u);
  EXPECT_EQ(j["versions"][0]["miners"], 0);
  EXPECT_EQ(j["versions"][1]["miners"].get<std::size_t>(), expected.miners.size());
  EXPECT_EQ(j["versions"][1]["exchange_keys"].get<std::size_t>(), expected.exchange_keys.size());

  expect_no_plaintext_in_dumps();
}

TEST_F(KeysTest, AnInterruptedRotateIsFinishedWithoutAnotherVersion) {
  auto ring = vault::KeyRing::open(data_ + "/secrets", /*create_if_missing=*/true);
  ASSERT_TRUE(ring.ok()) << ring.error().message;
  Expected expected;
  Writer seeder(owner_, *ring);
  for (int i = 0; i < 250; ++i) {
    ASSERT_TRUE(seeder.insert_miner("1", "101", "R-" + std::to_string(i), expected).ok());
  }
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(seeder.upsert_exchange_key("2", "201", "rx" + std::to_string(i), 0, expected).ok());
  }
  // A rotate that added version 2 and re-wrapped only some rows before it was killed.
  ASSERT_EQ(ring->add_version().value_or(0), 2u);
  auto half = owner_.exec(
      "SELECT id, encode(credentials_enc, 'hex') FROM miners WHERE key_version = 1 ORDER BY id "
      "LIMIT 100");
  ASSERT_TRUE(half.ok());
  for (int r = 0; r < half->rows(); ++r) {
    const std::int64_t id = half->int64(r, 0);
    auto next = vault::rewrap(*ring, unhex(half->text(r, 1)), vault::miner_credentials_id(id));
    ASSERT_TRUE(next.ok()) << next.error().message;
    ASSERT_TRUE(owner_
                    .exec("UPDATE miners SET credentials_enc = decode($1, 'hex'), key_version = 2 "
                          "WHERE id = $2",
                          {hex_encode(*next), std::to_string(id)})
                    .ok());
  }

  auto status = run(data_, {"keys", "status"});
  EXPECT_EQ(status.status, 0) << status.output;
  EXPECT_NE(status.output.find("current version 2"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("180 row(s) below the current version"), std::string::npos)
      << status.output;

  auto finished = run(data_, {"keys", "rotate", "--no-new-version"});
  ASSERT_EQ(finished.status, 0) << finished.output;
  EXPECT_NE(finished.output.find("master key version 2 (existing); re-wrapped 150 miners, 30 "
                                 "exchange_keys rows"),
            std::string::npos)
      << finished.output;
  ASSERT_TRUE(ring->reload().ok());
  EXPECT_EQ(ring->versions(), (std::vector<std::uint32_t>{1, 2}));
  expect_all_open(*ring, expected, 2);

  // Nothing left: a second run re-wraps nothing.
  auto again = run(data_, {"keys", "rotate", "--no-new-version"});
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("re-wrapped 0 miners, 0 exchange_keys rows"), std::string::npos)
      << again.output;
}

TEST_F(KeysTest, RotateWithAnotherDirectorysKeysFailsAndChangesNothing) {
  auto ring = vault::KeyRing::open(data_ + "/secrets", /*create_if_missing=*/true);
  ASSERT_TRUE(ring.ok());
  Expected expected;
  Writer seeder(owner_, *ring);
  ASSERT_TRUE(seeder.insert_miner("1", "101", "M-1", expected).ok());
  // The master keys of another data directory: version 1 exists there, but it is not this one.
  test::TempDir elsewhere;
  auto rotated = run(elsewhere.path(), {"keys", "rotate"});
  EXPECT_EQ(rotated.status, 1) << rotated.output;
  EXPECT_NE(rotated.output.find("cannot re-wrap miners:"), std::string::npos) << rotated.output;
  EXPECT_EQ(rotated.output.find(kMarker), std::string::npos) << rotated.output;
  // The row is untouched and still opens with the right ring.
  expect_all_open(*ring, expected, 1);
}

}  // namespace
}  // namespace hi
