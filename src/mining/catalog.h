// The ASIC miner catalogue: published nameplate specifications of real SHA-256 miners.
//
// This is the single source of the `miner_models` table: the seed command inserts exactly
// catalog() into it, row for row, so a model's `id` is a database key. Ids are stable: new models
// are appended with the next id, existing entries are never renumbered or removed.
//
// Specifications are the manufacturers' nameplate figures (hashrate at the stock profile, wall
// power); `typical_price_usd` is an approximate market reference used as a default capex, not a
// quote. All data is static and immutable; every function here is thread-safe.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace hi::mining {

struct MinerModel {
  int id = 0;                      // stable, 1..N, the miner_models primary key
  std::string_view slug;           // "antminer-s19-pro": lowercase, '-' separated, '+' -> "plus"
  std::string_view name;           // "Antminer S19 Pro"
  std::string_view manufacturer;   // "Bitmain", "MicroBT", "Canaan", ...
  double hashrate_ths = 0;         // nameplate hashrate, TH/s
  double power_w = 0;              // nameplate wall power, W
  double efficiency_j_per_th = 0;  // published efficiency, J/TH (= W per TH/s)
  int release_year = 0;            // year of first shipments
  double typical_price_usd = 0;    // approximate market price of one unit, USD
};

// All models, ordered by id (catalog()[i].id == i + 1).
std::span<const MinerModel> catalog();

// Looks a model up by slug or by name, ignoring case, spaces and punctuation:
// "antminer-s19-pro", "Antminer S19 Pro" and "ANTMINER S19 PRO" all find the same model; "S19 Pro"
// or "m30s++" (without the brand) work when exactly one model matches. Returns nullptr when nothing
// or more than one model matches. The pointer refers to static storage and never dangles.
const MinerModel* find_model(std::string_view slug_or_name);

// The model with this id, or nullptr.
const MinerModel* find_model_by_id(int id);

// The slug form of any text: lowercase ASCII letters and digits, '+' spelled "plus", every other
// run of characters collapsed to one '-', no leading or trailing '-'. slugify("Whatsminer M30S++")
// == "whatsminer-m30s-plus-plus".
std::string slugify(std::string_view text);

}  // namespace hi::mining
