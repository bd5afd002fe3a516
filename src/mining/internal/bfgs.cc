#include "mining/internal/bfgs.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace hi::mining::internal {
namespace {

double safe_eval(const std::function<double(std::span<const double>)>& f,
                 std::span<const double> x) {
  const double v = f(x);
  return std::isnan(v) ? std::numeric_limits<double>::infinity() : v;
}

std::vector<double> gradient(const std::function<double(std::span<const double>)>& f,
                             std::vector<double> x, double rel_step) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    const double h = rel_step * std::max(1.0, std::abs(xi));
    x[i] = xi + h;
    const double up = safe_eval(f, x);
    x[i] = xi - h;
    const double down = safe_eval(f, x);
    x[i] = xi;
    g[i] = (std::isfinite(up) && std::isfinite(down)) ? (up - down) / (2 * h) : 0.0;
  }
  return g;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace

BfgsResult minimize_bfgs(const std::function<double(std::span<const double>)>& f,
                         std::vector<double> x0, const BfgsOptions& options) {
  const std::size_t n = x0.size();
  BfgsResult r;
  r.x = std::move(x0);
  r.value = safe_eval(f, r.x);
  if (!std::isfinite(r.value)) return r;

  // H approximates the inverse Hessian, row-major n x n.
  std::vector<double> h(n * n, 0.0);
  auto reset = [&] {
    std::fill(h.begin(), h.end(), 0.0);
    for (std::size_t i = 0; i < n; ++i) h[i * n + i] = 1.0;
  };
  reset();
  std::vector<double> g = gradient(f, r.x, options.gradient_step);

  for (r.iterations = 0; r.iterations < options.max_iterations; ++r.iterations) {
    if (max_abs(g) < options.gradient_tolerance) {
      r.converged = true;
      break;
    }
    std::vector<double> p(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) p[i] -= h[i * n + j] * g[j];
    }
    double slope = dot(g, p);
    if (slope >= 0) {  // not a descent direction: fall back to steepest descent
      reset();
      for (std::size_t i = 0; i < n; ++i) p[i] = -g[i];
      slope = dot(g, p);
    }

    // Backtracking line search (Armijo condition, c1 = 1e-4).
    double t = 1.0;
    std::vector<double> x_new(n);
    double f_new = std::numeric_limits<double>::infinity();
    bool accepted = false;
    for (int k = 0; k < 60; ++k) {
      for (std::size_t i = 0; i < n; ++i) x_new[i] = r.x[i] + t * p[i];
      f_new = safe_eval(f, x_new);
      if (f_new <= r.value + 1e-4 * t * slope) {
        accepted = true;
        break;
      }
      t *= 0.5;
    }
    if (!accepted) {
      // No decrease along the direction: at the optimum up to numerical noise.
      r.converged = max_abs(g) < 1e3 * options.gradient_tolerance;
      break;
    }

    std::vector<double> g_new = gradient(f, x_new, options.gradient_step);
    std::vector<double> s(n), y(n);
    for (std::size_t i = 0; i < n; ++i) {
      s[i] = x_new[i] - r.x[i];
      y[i] = g_new[i] - g[i];
    }
    const double improvement = r.value - f_new;
    r.x = x_new;
    r.value = f_new;
    g = std::move(g_new);
    if (improvement <= options.value_tolerance * (1.0 + std::abs(r.value))) {
      r.converged = true;
      ++r.iterations;
      break;
    }

    const double sy = dot(s, y);
    if (sy <= 1e-12 * std::sqrt(dot(s, s) * dot(y, y))) {
      reset();  // curvature condition fails: restart from the identity
      continue;
    }
    // H <- (I - rho s y') H (I - rho y s') + rho s s'
    const double rho = 1.0 / sy;
    std::vector<double> hy(n, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) hy[i] += h[i * n + j] * y[j];
    }
    const double yhy = dot(y, hy);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        h[i * n + j] +=
            -rho * (hy[i] * s[j] + s[i] * hy[j]) + (rho * rho * yhy + rho) * s[i] * s[j];
      }
    }
  }
  return r;
}

}  // namespace hi::mining::internal
