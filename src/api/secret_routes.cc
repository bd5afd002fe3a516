// The routes that store secrets, envelope-encrypted (vault/vault.h, docs/secrets.md):
// POST/GET /api/hosting/miners (a physical miner and its pool credentials) and
// PUT/GET /api/treasury/exchange-keys/:exchange (a user's API key on an exchange).
//
// A secret reaches exactly one place: its sealed column. Responses, events, audit rows and
// error messages carry only what is not secret (pool url and worker, the key's last 4
// characters, the master key version); validation messages name fields, never values.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "api/internal/support.h"
#include "api/service.h"
#include "api/validate.h"
#include "core/strings.h"
#include "vault/vault.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;
using internal::db_failure;
using internal::record_write;
using internal::write_response;
using nlohmann::json;

constexpr std::size_t kMaxSerial = 100;
constexpr std::size_t kMaxSite = 100;
constexpr std::size_t kMaxPoolUrl = 300;
constexpr std::size_t kMaxPoolWorker = 200;
constexpr std::size_t kMaxPoolPassword = 200;
constexpr std::size_t kMinKey = 8, kMaxKey = 256;
constexpr std::size_t kMinSecret = 8, kMaxSecret = 512;
// The schemes miners speak to pools with.
constexpr std::string_view kPoolSchemes[] = {"stratum+tcp://", "stratum+ssl://", "stratum+tls://",
                                             "stratum2+tcp://", "stratum2+ssl://"};

bool printable_ascii(std::string_view s) {
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// stratum+tcp://host[:port][/...]: a known scheme, a host, no spaces or controls, and no
// user:password@ (a password belongs in pool.password, sealed, not in a clear column).
std::optional<std::string> pool_url_fault(std::string_view url) {
  for (std::string_view scheme : kPoolSchemes) {
    if (url.substr(0, scheme.size()) != scheme) continue;
    const std::string_view rest = url.substr(scheme.size());
    if (rest.empty() || rest.front() == '/' || rest.front() == ':' || !printable_ascii(rest)) {
      return "pool.url must be a stratum URL like stratum+tcp://pool.example:3333";
    }
    if (rest.find('@') != std::string_view::npos) {
      return "pool.url must not carry credentials (the password goes in pool.password)";
    }
    return std::nullopt;
  }
  return "pool.url must start with stratum+tcp://, stratum+ssl://, stratum+tls://, "
         "stratum2+tcp:// or stratum2+ssl://";
}

// What migration 015's CHECK accepts: ^[a-z0-9][a-z0-9_.-]{0,63}$.
bool valid_exchange(std::string_view e) {
  if (e.empty() || e.size() > 64) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(e.front())) return false;
  for (char c : e) {
    if (!alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

Response bad_exchange() {
  return Response::fail(ErrorCode::kBadRequest,
                        "exchange must be 1 to 64 of a-z, 0-9, '_', '.', '-', starting with a "
                        "letter or digit (e.g. kraken, binance)",
                        "exchange");
}

Response secrets_unavailable() {
  return Response::fail(ErrorCode::kUnavailable,
                        "stored secrets are unavailable: the master keys cannot be opened");
}

// A hosted miner as the API shows it: never its credentials.
constexpr const char* kHostedMinerJson =
    "json_build_object('id', id, 'serial', serial, 'site', site, 'model_id', model_id, "
    "'user_id', user_id, 'status', status, 'pool', json_build_object('url', pool_url, "
    "'worker', pool_worker, 'password_set', credentials_enc IS NOT NULL), 'key_version', "
    "key_version, 'created_at', created_at)";

// An exchange key as the API shows it: never the key or the secret.
constexpr const char* kExchangeKeyJson =
    "json_build_object('id', id, 'exchange', exchange, 'key_last4', key_last4, 'key_version', "
    "key_version, 'created_at', created_at, 'updated_at', updated_at)";

}  // namespace

Result<const vault::KeyRing*> Service::key_ring() {
  std::lock_guard lock(key_ring_mu_);
  if (key_ring_) return key_ring_.get();
  if (options_.secrets_dir.empty()) return unavailable("no secrets directory is configured");
  auto ring = vault::KeyRing::open(options_.secrets_dir, /*create_if_missing=*/true);
  if (!ring) return ring.error();
  key_ring_ = std::make_unique<vault::KeyRing>(std::move(*ring));
  log_.info("master keys opened", {{"directory", key_ring_->directory()},
                                   {"current_version", key_ring_->current_version()}});
  return key_ring_.get();
}

void Service::add_secret_routes(http::Router& router) {
  // A physical miner hosted for the tenant, with its pool credentials: the password sealed in
  // credentials_enc as {"password": ...} (JSON, so more credential fields can join it), the
  // url and worker in clear.
  router.add("POST", "/api/hosting/miners", [this](http::Request& r) {
    return guarded(r, "miners:write", true, [this](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body, {"serial", "site", "model_id", "pool"});
      const auto serial = f.text("serial", true, kMaxSerial);
      const auto site = f.text("site", false, kMaxSite);
      const auto model_id = f.integer("model_id", true, 1, 2'147'483'647);
      if (auto e = f.error()) return Response::fail(*e);
      const auto pool = body->find("pool");
      if (pool == body->end() || !pool->is_object()) {
        return Response::fail(ErrorCode::kBadRequest,
                              "pool must be an object with url, worker and password", "pool");
      }
      Fields p(*pool, {"url", "worker", "password"}, "pool.");
      const auto url = p.text("url", true, kMaxPoolUrl);
      const auto worker = p.text("worker", true, kMaxPoolWorker);
      const auto password = p.text("password", true, kMaxPoolPassword);
      if (auto e = p.error()) return Response::fail(*e);
      if (auto fault = pool_url_fault(*url)) {
        return Response::fail(ErrorCode::kBadRequest, *fault, "pool.url");
      }
      if (worker->find_first_of("\r\n\t") != std::string::npos) {
        return Response::fail(ErrorCode::kBadRequest, "pool.worker must be one line",
                              "pool.worker");
      }
      auto unknown = internal::first_unknown_model(c.db, {*model_id});
      if (!unknown) return db_failure(unknown.error());
      if (*unknown != 0) {
        return Response::fail(ErrorCode::kBadRequest, "unknown miner model", "model_id");
      }
      auto ring = key_ring();
      if (!ring) {
        log_.error("master keys cannot be opened", {{"error", ring.error().message}});
        return secrets_unavailable();
      }
      // The id first: the blob is sealed for the record it is stored under.
      auto next = c.db.exec("SELECT nextval(pg_get_serial_sequence('miners', 'id'))");
      if (!next) return db_failure(next.error());
      const std::int64_t id = next->int64(0, 0);
      const std::string record = vault::miner_credentials_id(id);
      auto blob = vault::seal(**ring, json{{"password", *password}}.dump(), record);
      if (!blob) {
        log_.error("sealing failed", {{"record", record}, {"error", blob.error().message}});
        return Response::fail(ErrorCode::kInternal, "internal error");
      }
      auto row = c.db.exec(
          "INSERT INTO miners (id, tenant_id, user_id, model_id, serial, site, pool_url, "
          "pool_worker, credentials_enc, key_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
          "decode($9, 'hex'), $10) ON CONFLICT (tenant_id, serial) DO NOTHING RETURNING " +
              std::string(kHostedMinerJson) + "::text",
          {std::to_string(id), c.who.tenant_id, c.who.user_id, std::to_string(*model_id), *serial,
           site, *url, *worker, hex_encode(*blob), std::to_string(*vault::blob_version(*blob))});
      if (!row) return db_failure(row.error());
      if (row->empty()) {
        return Response::fail(ErrorCode::kConflict,
                              "a miner with this serial is already hosted for the tenant",
                              "serial");
      }
      const json miner = json::parse(row->text(0, 0));
      const json payload = {
          {"miner_id", id}, {"serial", *serial}, {"site", miner["site"]}, {"model_id", *model_id}};
      json after = payload;
      after["user_id"] = miner["user_id"];
      after["key_version"] = miner["key_version"];
      after["pool"] = {{"url", *url}, {"worker", *worker}, {"password", "[redacted]"}};
      auto ev = record_write(c, {"miner.hosted", "miner.host", "miners", std::to_string(id),
                                 payload, nullptr, after, true});
      if (!ev) return db_failure(ev.error());
      return write_response({{"id", id},
                             {"serial", *serial},
                             {"site", miner["site"]},
                             {"model_id", *model_id},
                             {"pool", {{"url", *url}, {"worker", *worker}, {"password_set", true}}},
                             {"created_at", miner["created_at"]}},
                            *ev, 201);
    });
  });

  router.add("GET", "/api/hosting/miners", [this](http::Request& r) {
    return guarded(r, "portfolio:read", false, [](Call& c) {
      // Row-level security keeps it to the caller's tenant.
      return internal::json_query(c, "SELECT coalesce(json_agg(" + std::string(kHostedMinerJson) +
                                         " ORDER BY id), '[]')::text FROM miners");
    });
  });

  // One key per (tenant, user, exchange), replaced by a later PUT. Both blobs are sealed for
  // the row's id, so the id is settled first: the existing row, locked, or a new id from the
  // sequence. Two first PUTs racing: the loser's INSERT finds the winner's row (ON CONFLICT
  // waits for its commit) and goes round again, now as an update of that row.
  router.add("PUT", "/api/treasury/exchange-keys/:exchange", [this](http::Request& r) {
    return guarded(r, "treasury:trade", true, [this](Call& c) {
      const std::string exchange(c.request.param("exchange"));
      if (!valid_exchange(exchange)) return bad_exchange();
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body, {"key", "secret"});
      const auto key = f.text("key", true, kMaxKey);
      const auto secret = f.text("secret", true, kMaxSecret);
      if (auto e = f.error()) return Response::fail(*e);
      if (key->size() < kMinKey || !printable_ascii(*key)) {
        return Response::fail(ErrorCode::kBadRequest,
                              "key must be 8 to 256 printable ASCII characters without spaces",
                              "key");
      }
      if (secret->size() < kMinSecret) {
        return Response::fail(ErrorCode::kBadRequest, "secret must be a string of 8 to 512 bytes",
                              "secret");
      }
      auto ring = key_ring();
      if (!ring) {
        log_.error("master keys cannot be opened", {{"error", ring.error().message}});
        return secrets_unavailable();
      }
      const std::string last4 = key->substr(key->size() - 4);
      for (int attempt = 0; attempt < 2; ++attempt) {
        auto found = c.db.exec("SELECT id, " + std::string(kExchangeKeyJson) +
                                   "::text FROM exchange_keys WHERE tenant_id = $1 AND "
                                   "user_id = $2 AND exchange = $3 FOR UPDATE",
                               {c.who.tenant_id, c.who.user_id, exchange});
        if (!found) return db_failure(found.error());
        const bool exists = !found->empty();
        std::int64_t id = 0;
        json before = nullptr;
        if (exists) {
          id = found->int64(0, 0);
          before = json::parse(found->text(0, 1));
        } else {
          auto next = c.db.exec("SELECT nextval(pg_get_serial_sequence('exchange_keys', 'id'))");
          if (!next) return db_failure(next.error());
          id = next->int64(0, 0);
        }
        auto key_blob = vault::seal(**ring, *key, vault::exchange_key_id(id));
        auto secret_blob = vault::seal(**ring, *secret, vault::exchange_secret_id(id));
        if (!key_blob || !secret_blob) {
          log_.error("sealing failed",
                     {{"record", vault::exchange_key_id(id)},
                      {"error", (key_blob ? secret_blob.error() : key_blob.error()).message}});
          return Response::fail(ErrorCode::kInternal, "internal error");
        }
        // Both blobs come from the same ring state, but rotation may land between the two
        // seals: the row's version is the older one, so `keys rotate` still re-wraps it.
        const std::uint32_t version =
            std::min(*vault::blob_version(*key_blob), *vault::blob_version(*secret_blob));
        const pg::Params values = {std::to_string(id),
                                   c.who.tenant_id,
                                   c.who.user_id,
                                   exchange,
                                   hex_encode(*key_blob),
                                   hex_encode(*secret_blob),
                                   last4,
                                   std::to_string(version)};
        auto row =
            exists ? c.db.exec(
                         "UPDATE exchange_keys SET key_enc = decode($5, 'hex'), secret_enc = "
                         "decode($6, 'hex'), key_last4 = $7, key_version = $8, updated_at = "
                         "now() WHERE id = $1 AND tenant_id = $2 AND user_id = $3 AND "
                         "exchange = $4 RETURNING " +
                             std::string(kExchangeKeyJson) + "::text",
                         values)
                   : c.db.exec(
                         "INSERT INTO exchange_keys (id, tenant_id, user_id, exchange, key_enc, "
                         "secret_enc, key_last4, key_version) VALUES ($1, $2, $3, $4, "
                         "decode($5, 'hex'), decode($6, 'hex'), $7, $8) ON CONFLICT "
                         "(tenant_id, user_id, exchange) DO NOTHING RETURNING " +
                             std::string(kExchangeKeyJson) + "::text",
                         values);
        if (!row) return db_failure(row.error());
        if (row->empty()) continue;  // a concurrent first PUT won: update its row
        json after = json::parse(row->text(0, 0));
        const json payload = {{"exchange", exchange}, {"key_last4", last4}};
        auto ev =
            record_write(c, {"treasury.exchange_key_set", "treasury.exchange_key_set",
                             "exchange_keys", std::to_string(id), payload, before, after, true});
        if (!ev) return db_failure(ev.error());
        return write_response(
            {{"exchange", exchange}, {"key_last4", last4}, {"updated_at", after["updated_at"]}},
            *ev, exists ? 200 : 201);
      }
      return Response::fail(ErrorCode::kConflict,
                            "the key of this exchange is being set by another request; retry",
                            "exchange");
    });
  });

  router.add("GET", "/api/treasury/exchange-keys/:exchange", [this](http::Request& r) {
    return guarded(r, "treasury:trade", false, [](Call& c) {
      const std::string exchange(c.request.param("exchange"));
      if (!valid_exchange(exchange)) return bad_exchange();
      auto row = c.db.exec(
          "SELECT json_build_object('exchange', exchange, 'key_last4', key_last4, 'key_version', "
          "key_version, 'created_at', created_at, 'updated_at', updated_at)::text "
          "FROM exchange_keys WHERE tenant_id = $1 AND user_id = $2 AND exchange = $3",
          {c.who.tenant_id, c.who.user_id, exchange});
      if (!row) return db_failure(row.error());
      if (row->empty()) {
        return Response::fail(ErrorCode::kNotFound, "no key stored for exchange " + exchange);
      }
      return Response::text(std::string(row->text(0, 0)), "application/json");
    });
  });
}

}  // namespace hi::api
