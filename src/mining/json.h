// The mining results as JSON, in one spelling for every caller (`hashinsight calc --json`, the
// API's POST /api/calculate and its projection): field names carry their units, optional
// figures are null when they do not exist (no ROI without capex, no network-share figure
// without a network hashrate).
#pragma once

#include <nlohmann/json.hpp>

#include "mining/profitability.h"

namespace hi::mining {

nlohmann::json to_json(const Profitability& result);

// The inputs of a calculation (network conditions and operating parameters).
nlohmann::json to_json(const NetworkConditions& network, const OperatingParams& ops);

}  // namespace hi::mining
