// `hashinsight calc`: the profitability of a catalogue model at given prices, offline.
//
//   hashinsight calc --model antminer-s19-pro --btc-price 60000 --difficulty 1.1e14
//       [--network-hashrate-ehs 800] [--electricity 0.05] [--pool-fee 0.02] [--units 10] [--json]
//
// Prints a readable table (default) or one JSON object (--json) on stdout. Invalid input (an
// unknown model, a missing or malformed number, a value out of range) prints one line
// "hashinsight calc: <reason>" on stderr and makes the command fail with exit code 2 (it throws
// Exit{2}, which run_command_line() turns into the exit code).
// Needs hi::mining, CLI11 and nlohmann_json.
#pragma once

#include <CLI/CLI.hpp>
#include <ostream>

namespace hi::cli {

// Registers the `calc` subcommand on `app`, writing to std::cout / std::cerr.
void add_calc_command(CLI::App& app);

// The same, writing to `out` and `err` (which must outlive `app`); for tests.
void add_calc_command(CLI::App& app, std::ostream& out, std::ostream& err);

}  // namespace hi::cli
