// A small unconstrained minimiser: BFGS with a central-difference gradient and a backtracking
// (Armijo) line search. Enough for the 3-parameter ARIMA likelihood; deterministic.
#pragma once

#include <functional>
#include <span>
#include <vector>

namespace hi::mining::internal {

struct BfgsOptions {
  int max_iterations = 500;
  double gradient_tolerance = 1e-8;  // stop when max |df/dx_i| falls below this
  double value_tolerance = 1e-13;    // ... or when f improves by less than this (relative)
  double gradient_step = 1e-6;       // central-difference step, relative to max(1, |x_i|)
};

struct BfgsResult {
  std::vector<double> x;
  double value = 0;
  int iterations = 0;
  bool converged = false;
};

// Minimises f from x0. f may return +inf (or NaN, treated as +inf) for points it cannot evaluate;
// the line search then backs off. f(x0) must be finite.
BfgsResult minimize_bfgs(const std::function<double(std::span<const double>)>& f,
                         std::vector<double> x0, const BfgsOptions& options = {});

}  // namespace hi::mining::internal
