// Input checks shared by the mining library. Every public entry point validates its inputs with
// these before computing, so no NaN or infinity can reach an output.
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"

namespace hi::mining::internal {

// Text of a double for messages: "100000", "0.05", "1e+20", "nan".
std::string format_number(double value);

// OK when `value` is finite and lo <= value <= hi; otherwise
// invalid_argument("<field> must be between <lo> and <hi>, got <value>").
Status check_range(std::string_view field, double value, double lo, double hi);

// OK when `value` is finite and lo < value <= hi (an open lower bound, for "must be positive").
Status check_positive(std::string_view field, double value, double hi);

}  // namespace hi::mining::internal
