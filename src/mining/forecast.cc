#include "mining/forecast.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mining/internal/bfgs.h"
#include "mining/internal/validate.h"

namespace hi::mining {
namespace {

using Vec3 = std::array<double, 3>;
using Mat3 = std::array<double, 9>;  // row-major

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kLog2Pi = 1.8378770664093454836;  // log(2 pi)

// State alpha_t = [y_{t-1}, a1_t, a2_t] with y_t = y_{t-1} + a1_t, i.e. Z = [1, 1, 0];
// a1_{t+1} = phi a1_t + a2_t + e_{t+1}, a2_{t+1} = theta e_{t+1}: T = [[1,1,0],[0,phi,1],[0,0,0]],
// R = [0, 1, theta]. The level row of T carries y_t into the next state.
struct Model {
  double phi;
  double theta;
  double sigma2;
};

Vec3 transition(const Model& m, const Vec3& a) { return {a[0] + a[1], m.phi * a[1] + a[2], 0.0}; }

// T P T' + sigma2 R R'.
Mat3 predict_cov(const Model& m, const Mat3& p) {
  // TP rows: r0 = p0 + p1, r1 = phi p1 + p2, r2 = 0 (pi = row i of P).
  Mat3 tp{};
  for (int j = 0; j < 3; ++j) {
    tp[0 * 3 + j] = p[0 * 3 + j] + p[1 * 3 + j];
    tp[1 * 3 + j] = m.phi * p[1 * 3 + j] + p[2 * 3 + j];
  }
  Mat3 out{};
  for (int i = 0; i < 2; ++i) {
    out[i * 3 + 0] = tp[i * 3 + 0] + tp[i * 3 + 1];
    out[i * 3 + 1] = m.phi * tp[i * 3 + 1] + tp[i * 3 + 2];
  }
  const double r[3] = {0.0, 1.0, m.theta};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) out[i * 3 + j] += m.sigma2 * r[i] * r[j];
  }
  // Keep P exactly symmetric.
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      const double avg = 0.5 * (out[i * 3 + j] + out[j * 3 + i]);
      out[i * 3 + j] = out[j * 3 + i] = avg;
    }
  }
  return out;
}

// Var(y_t | past) = Z P Z' with Z = [1, 1, 0].
double obs_var(const Mat3& p) { return p[0] + p[1] + p[3] + p[4]; }

struct FilterResult {
  double log_likelihood = kNegInf;
  Vec3 a{};  // predicted state after the last observation
  Mat3 p{};
};

FilterResult run_filter(std::span<const double> y, const Model& m, const ArimaOptions& options) {
  FilterResult out;
  if (!(std::abs(m.phi) < 1) || !(std::abs(m.theta) < 1) || !(m.sigma2 > 0)) return out;
  // Stationary covariance of the ARMA(1,1) block: Var(a1) = sigma2 (1 + 2 phi theta + theta^2) /
  // (1 - phi^2), Cov(a1, a2) = sigma2 theta, Var(a2) = sigma2 theta^2.
  const double gamma0 =
      m.sigma2 * (1 + 2 * m.phi * m.theta + m.theta * m.theta) / (1 - m.phi * m.phi);
  Vec3 a{0, 0, 0};
  Mat3 p{
      0, 0, 0, 0, gamma0, m.sigma2 * m.theta, 0, m.sigma2 * m.theta, m.sigma2 * m.theta * m.theta};
  std::size_t first = 0;  // first observation to filter
  std::size_t burn = 0;   // observations filtered but left out of the likelihood
  if (options.init == DiffuseInit::kExact) {
    // Exactly diffuse level: y_1 reveals y_1 and nothing about the ARMA state, so filtering starts
    // at t = 2 with the level known and the ARMA block at its stationary prior.
    a[0] = y[0];
    first = 1;
  } else {
    p[0] = options.approximate_diffuse_variance;
    burn = 1;
  }

  double ll = 0;
  for (std::size_t t = first; t < y.size(); ++t) {
    const double f = obs_var(p);
    if (!(f > 0) || !std::isfinite(f)) return out;
    const double v = y[t] - (a[0] + a[1]);
    // P Z' (column): rows summed over the first two columns.
    const Vec3 pz{p[0] + p[1], p[3] + p[4], p[6] + p[7]};
    Vec3 af;
    Mat3 pf;
    for (int i = 0; i < 3; ++i) {
      af[i] = a[i] + pz[i] * v / f;
      for (int j = 0; j < 3; ++j) pf[i * 3 + j] = p[i * 3 + j] - pz[i] * pz[j] / f;
    }
    if (t >= first + burn) ll += -0.5 * (kLog2Pi + std::log(f) + v * v / f);
    a = transition(m, af);
    p = predict_cov(m, pf);
  }
  if (!std::isfinite(ll)) return out;
  out.log_likelihood = ll;
  out.a = a;
  out.p = p;
  return out;
}

double constrain(double x) { return x / std::sqrt(1 + x * x); }
double unconstrain(double c) { return c / std::sqrt(1 - c * c); }

// Ordinary least squares for two regressors without intercept; false when singular.
bool ols2(const std::vector<double>& yv, const std::vector<double>& x1,
          const std::vector<double>& x2, double& b1, double& b2) {
  double s11 = 0, s12 = 0, s22 = 0, s1y = 0, s2y = 0;
  for (std::size_t i = 0; i < yv.size(); ++i) {
    s11 += x1[i] * x1[i];
    s12 += x1[i] * x2[i];
    s22 += x2[i] * x2[i];
    s1y += x1[i] * yv[i];
    s2y += x2[i] * yv[i];
  }
  const double det = s11 * s22 - s12 * s12;
  if (!(std::abs(det) > 1e-300) || !std::isfinite(det)) return false;
  b1 = (s22 * s1y - s12 * s2y) / det;
  b2 = (s11 * s2y - s12 * s1y) / det;
  return std::isfinite(b1) && std::isfinite(b2);
}

// Hannan-Rissanen starting values, as statsmodels' SARIMAX.start_params computes them: residuals
// of an AR(2) fitted to the differences by OLS stand in for e_t, then z_t is regressed on z_{t-1}
// and e_{t-1}; values outside the stationary/invertible region are replaced by 0. sigma2 starts at
// the mean squared residual of that regression.
Model start_values(const std::vector<double>& z) {
  Model m{0, 0, 0};
  double zz = 0;
  for (double v : z) zz += v * v;
  m.sigma2 = zz / static_cast<double>(z.size());
  const std::size_t n = z.size();
  if (n < 8) return m;
  std::vector<double> y1, l1, l2;
  for (std::size_t t = 2; t < n; ++t) {
    y1.push_back(z[t]);
    l1.push_back(z[t - 1]);
    l2.push_back(z[t - 2]);
  }
  double c1 = 0, c2 = 0;
  if (!ols2(y1, l1, l2, c1, c2)) return m;
  std::vector<double> e(n, 0.0);  // e[t] for t >= 2
  for (std::size_t t = 2; t < n; ++t) e[t] = z[t] - c1 * z[t - 1] - c2 * z[t - 2];
  std::vector<double> y2, zl, el;
  for (std::size_t t = 3; t < n; ++t) {
    y2.push_back(z[t]);
    zl.push_back(z[t - 1]);
    el.push_back(e[t - 1]);
  }
  double phi = 0, theta = 0;
  if (!ols2(y2, zl, el, phi, theta)) return m;
  double ss = 0;
  for (std::size_t i = 0; i < y2.size(); ++i) {
    const double r = y2[i] - phi * zl[i] - theta * el[i];
    ss += r * r;
  }
  m.phi = std::abs(phi) < 1 ? phi : 0.0;
  m.theta = std::abs(theta) < 1 ? theta : 0.0;
  const double s2 = ss / static_cast<double>(y2.size());
  if (s2 > 0 && std::isfinite(s2)) m.sigma2 = s2;
  return m;
}

Status check_series(std::span<const double> y, bool positive, std::string_view what) {
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i]) || (positive && !(y[i] > 0))) {
      return invalid_argument(std::string(what) + "[" + std::to_string(i) + "] must be " +
                              (positive ? "a finite number > 0" : "finite") + ", got " +
                              internal::format_number(y[i]));
    }
  }
  return ok_status();
}

std::vector<ForecastPoint> back_transform(std::vector<ForecastPoint> points, bool log_scale) {
  if (!log_scale) return points;
  for (ForecastPoint& p : points) {
    p.mean = std::exp(p.mean);
    p.lower_95 = std::exp(p.lower_95);
    p.upper_95 = std::exp(p.upper_95);
  }
  return points;
}

}  // namespace

std::vector<ForecastPoint> ArimaFit::forecast(int horizon) const {
  std::vector<ForecastPoint> out;
  if (horizon <= 0) return out;
  out.reserve(static_cast<std::size_t>(horizon));
  const Model m{ar, ma, sigma2};
  Vec3 a = state;
  Mat3 p = state_cov;
  for (int h = 1; h <= horizon; ++h) {
    const double mean = a[0] + a[1];
    const double sd = std::sqrt(std::max(0.0, obs_var(p)));
    out.push_back({h, mean, mean - kZ95 * sd, mean + kZ95 * sd});
    a = transition(m, a);
    p = predict_cov(m, p);
  }
  return out;
}

double arima_111_log_likelihood(std::span<const double> y, double ar, double ma, double sigma2,
                                const ArimaOptions& options) {
  if (y.size() < 2) return kNegInf;
  return run_filter(y, Model{ar, ma, sigma2}, options).log_likelihood;
}

Result<ArimaFit> fit_arima_111(std::span<const double> y, const ArimaOptions& options) {
  if (y.size() < static_cast<std::size_t>(kMinArimaObservations)) {
    return invalid_argument("ARIMA(1,1,1) needs at least " + std::to_string(kMinArimaObservations) +
                            " observations, got " + std::to_string(y.size()));
  }
  if (Status s = check_series(y, false, "series"); !s) return s.error();
  if (options.init == DiffuseInit::kStatsmodelsApproximate) {
    if (Status s = internal::check_positive("approximate_diffuse_variance",
                                            options.approximate_diffuse_variance, 1e300);
        !s)
      return s.error();
  }

  ArimaFit fit;
  fit.observations = static_cast<int>(y.size());
  fit.init = options.init;

  std::vector<double> z(y.size() - 1);
  bool constant = true;
  for (std::size_t t = 1; t < y.size(); ++t) {
    z[t - 1] = y[t] - y[t - 1];
    constant = constant && z[t - 1] == 0;
  }
  if (constant) {
    // Nothing to estimate: the best forecast is the last value, with no spread.
    fit.degenerate = true;
    fit.converged = true;
    fit.state = {y.back(), 0, 0};
    return fit;
  }

  const Model start = start_values(z);
  const double scale = std::sqrt(start.sigma2);  // sigma2 = (scale c)^2 keeps c near 1
  auto to_model = [scale](std::span<const double> x) {
    const double s = scale * x[2];
    return Model{constrain(x[0]), constrain(x[1]), s * s};
  };
  const double n_lik = static_cast<double>(y.size() - 1);
  // Minimise the negative log-likelihood per observation (a well-scaled objective).
  auto objective = [&](std::span<const double> x) {
    const double ll = run_filter(y, to_model(x), options).log_likelihood;
    return std::isfinite(ll) ? -ll / n_lik : std::numeric_limits<double>::infinity();
  };
  internal::BfgsOptions bfgs;
  bfgs.max_iterations = options.max_iterations;
  const internal::BfgsResult best = internal::minimize_bfgs(
      objective, {unconstrain(start.phi), unconstrain(start.theta), 1.0}, bfgs);
  const Model m = to_model(best.x);
  const FilterResult filtered = run_filter(y, m, options);
  if (!std::isfinite(filtered.log_likelihood)) {
    return internal_error("ARIMA(1,1,1) likelihood could not be evaluated at the optimum");
  }
  fit.ar = m.phi;
  fit.ma = m.theta;
  fit.sigma2 = m.sigma2;
  fit.log_likelihood = filtered.log_likelihood;
  fit.iterations = best.iterations;
  fit.converged = best.converged;
  fit.state = filtered.a;
  fit.state_cov = filtered.p;
  return fit;
}

Result<SeriesForecast> forecast_series(std::span<const double> daily,
                                       const ForecastOptions& options) {
  if (options.horizon_days < 1 || options.horizon_days > 365) {
    return invalid_argument("horizon_days must be between 1 and 365, got " +
                            std::to_string(options.horizon_days));
  }
  if (options.holdout_days < 1 || options.holdout_days > 365) {
    return invalid_argument("holdout_days must be between 1 and 365, got " +
                            std::to_string(options.holdout_days));
  }
  const int min_window = kMinArimaObservations + options.holdout_days;
  if (options.window_days < min_window || options.window_days > 100000) {
    return invalid_argument("window_days must be between " + std::to_string(min_window) +
                            " and 100000, got " + std::to_string(options.window_days));
  }
  const std::size_t n = std::min(daily.size(), static_cast<std::size_t>(options.window_days));
  if (n < static_cast<std::size_t>(min_window)) {
    return invalid_argument("forecast needs at least " + std::to_string(min_window) +
                            " daily values (" + std::to_string(kMinArimaObservations) +
                            " to fit + " + std::to_string(options.holdout_days) +
                            " held out), got " + std::to_string(daily.size()));
  }
  const std::span<const double> window = daily.subspan(daily.size() - n);
  if (Status s = check_series(window, options.log_transform, "daily"); !s) return s.error();

  std::vector<double> y(window.begin(), window.end());
  if (options.log_transform) {
    for (double& v : y) v = std::log(v);
  }

  SeriesForecast out;
  out.log_transformed = options.log_transform;
  out.model = options.log_transform ? "ARIMA(1,1,1) on log(y)" : "ARIMA(1,1,1)";
  out.observations = static_cast<int>(n);

  Result<ArimaFit> full = fit_arima_111(y, options.arima);
  if (!full) return full.error().wrap("full window");
  out.predictions = back_transform(full->forecast(options.horizon_days), options.log_transform);
  out.fit = std::move(*full);

  const std::size_t fit_n = n - static_cast<std::size_t>(options.holdout_days);
  Result<ArimaFit> head = fit_arima_111(std::span<const double>(y).first(fit_n), options.arima);
  if (!head) return head.error().wrap("holdout fit");
  out.holdout_predictions =
      back_transform(head->forecast(options.holdout_days), options.log_transform);
  out.holdout_actual.assign(window.begin() + static_cast<std::ptrdiff_t>(fit_n), window.end());
  double sse = 0, sae = 0;
  for (std::size_t i = 0; i < out.holdout_actual.size(); ++i) {
    const double err = out.holdout_predictions[i].mean - out.holdout_actual[i];
    sse += err * err;
    sae += std::abs(err);
  }
  const double k = static_cast<double>(out.holdout_actual.size());
  out.holdout_rmse = std::sqrt(sse / k);
  out.holdout_mae = sae / k;
  return out;
}

Result<SeriesForecast> forecast_btc_price(std::span<const double> daily_price_usd) {
  ForecastOptions o;
  // Prices are positive: check that as well, even though the model is on levels.
  if (Status s = check_series(daily_price_usd, true, "daily_price_usd"); !s) return s.error();
  return forecast_series(daily_price_usd, o);
}

Result<SeriesForecast> forecast_difficulty(std::span<const double> daily_difficulty) {
  ForecastOptions o;
  o.log_transform = true;
  return forecast_series(daily_difficulty, o);
}

}  // namespace hi::mining
