// The business routes beyond mining: POST /api/treasury/execute (treasury.trade_executed on
// events.treasury) and POST /api/crm/customers (crm.customer_created on events.crm).
#include <nlohmann/json.hpp>

#include "api/internal/support.h"
#include "api/service.h"
#include "api/validate.h"

namespace hi::api {
namespace {

using http::ErrorCode;
using http::Response;
using internal::db_failure;
using nlohmann::json;

constexpr const char* kSides[] = {"buy", "sell"};
constexpr double kMinTradeBtc = 1e-8;  // one satoshi: amount_btc is numeric(20, 8)
constexpr double kMaxTradeBtc = 10'000;
constexpr double kMaxPriceUsd = 1e8;

// An e-mail address in the plain form name@domain.tld (no display names, no comments).
bool plausible_email(std::string_view e) {
  const auto at = e.find('@');
  if (at == 0 || at == std::string_view::npos || e.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  const auto dot = e.find('.', at);
  return dot != std::string_view::npos && dot > at + 1 && dot + 1 < e.size() &&
         e.find_first_of(" \t\r\n<>()[],;:\"") == std::string_view::npos;
}

}  // namespace

void Service::add_business_routes(http::Router& router) {
  // Records a trade at the given price, else at the latest snapshot's BTC price.
  router.add("POST", "/api/treasury/execute", [this](http::Request& r) {
    return guarded(r, "treasury:trade", true, [](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body, {"side", "amount_btc", "price_usd"});
      const auto side = f.one_of("side", true, kSides);
      const auto amount = f.number("amount_btc", true, kMinTradeBtc, kMaxTradeBtc);
      const auto price = f.number("price_usd", false, 0.01, kMaxPriceUsd);
      if (auto e = f.error()) return Response::fail(*e);
      double at = 0;
      if (price) {
        at = *price;
      } else {
        auto net = internal::latest_network(c.db);
        if (!net) return db_failure(net.error());
        at = net->btc_price_usd;
      }
      auto row = c.db.exec(
          "INSERT INTO treasury_trades (tenant_id, user_id, side, amount_btc, price_usd) "
          "VALUES ($1, $2, $3, round($4::numeric, 8), round($5::numeric, 2)) "
          "RETURNING json_build_object('id', id, 'side', side, 'amount_btc', amount_btc, "
          "'price_usd', price_usd, 'notional_usd', round(amount_btc * price_usd, 2), "
          "'executed_at', executed_at)::text",
          {c.who.tenant_id, c.who.user_id, *side, json(*amount).dump(), json(at).dump()});
      if (!row) return db_failure(row.error());
      const json trade = json::parse(row->text(0, 0));
      const std::string id = std::to_string(trade["id"].get<std::int64_t>());
      json payload = trade;
      payload["trade_id"] = trade["id"];
      payload.erase("id");
      auto ev = internal::record_write(c, {"treasury.trade_executed", "treasury.execute",
                                           "treasury_trades", id, payload, nullptr, trade, true});
      if (!ev) return db_failure(ev.error());
      return internal::write_response({{"id", trade["id"]}, {"trade", trade}}, *ev, 201);
    });
  });

  router.add("POST", "/api/crm/customers", [this](http::Request& r) {
    return guarded(r, "crm:write", true, [](Call& c) {
      http::ApiError bad;
      auto body = parse_object(c.request.body, &bad);
      if (!body) return Response::fail(bad);
      Fields f(*body, {"name", "email"});
      const auto name = f.text("name", true, 200);
      const auto email = f.text("email", false, 254);
      if (auto e = f.error()) return Response::fail(*e);
      if (email && !plausible_email(*email)) {
        return Response::fail(ErrorCode::kBadRequest, "email must be an address like a@b.example",
                              "email");
      }
      auto row = c.db.exec(
          "INSERT INTO crm_customers (tenant_id, name, email, created_by) VALUES ($1, $2, $3, $4) "
          "RETURNING json_build_object('id', id, 'name', name, 'email', email, 'created_by', "
          "created_by, 'created_at', created_at)::text",
          {c.who.tenant_id, *name, email, c.who.user_id});
      if (!row) return db_failure(row.error());
      const json customer = json::parse(row->text(0, 0));
      const std::string id = std::to_string(customer["id"].get<std::int64_t>());
      const json payload = {
          {"customer_id", customer["id"]}, {"name", *name}, {"email", customer["email"]}};
      auto ev = internal::record_write(c, {"crm.customer_created", "crm.customer_create",
                                           "crm_customers", id, payload, nullptr, customer, true});
      if (!ev) return db_failure(ev.error());
      return internal::write_response({{"id", customer["id"]}, {"customer", customer}}, *ev, 201);
    });
  });
}

}  // namespace hi::api
