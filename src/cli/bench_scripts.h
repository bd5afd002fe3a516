// The scripts `bench api` hands its load generators (the files of bench/: wrk Lua scripts and a
// pgbench script), compiled in so that the command runs from any directory. Their definition is
// generated from bench/ by src/cli/CMakeLists.txt.
#pragma once

#include <span>
#include <string_view>

namespace hi::cli {

struct BenchScript {
  std::string_view name;  // the file name in bench/
  std::string_view text;
};

std::span<const BenchScript> bench_scripts();

}  // namespace hi::cli
