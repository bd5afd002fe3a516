// Forecasts of BTC price and network difficulty: ARIMA(1,1,1) by exact Gaussian maximum likelihood.
//
// The model for a daily series y_t:  z_t = y_t - y_{t-1},  z_t = phi z_{t-1} + e_t + theta e_{t-1},
// e_t ~ N(0, sigma2), no constant. It is cast in state space like statsmodels' SARIMAX
// (state = [y_{t-1}, ARMA(1,1) in Harvey form]), the likelihood comes from the Kalman filter
// (prediction-error decomposition), and the forecast means and variances from the filter's
// h-step predictions. 95 % intervals are mean +- 1.959964 sd.
//
// Estimation mirrors statsmodels' ARIMA.fit(): Hannan-Rissanen starting values, then a local
// quasi-Newton optimisation (BFGS, numeric gradient) over the transformed parameters
// phi = a / sqrt(1 + a^2), theta = b / sqrt(1 + b^2) (stationary and invertible by construction),
// sigma2 = c^2. A local search is deliberate: ARMA(1,1) likelihoods have a flat ridge along
// phi = -theta (the model collapses to white noise, forecasts are the same anywhere on it) and
// spurious optima at |phi|, |theta| -> 1 that a global search would chase.
//
// Initial state of the integrated (level) part, see DiffuseInit:
//   kExact (default): exactly diffuse, i.e. the likelihood of the ARMA(1,1) of the differences
//     with a stationary start. Scale invariant. Matches SARIMAX(use_exact_diffuse=True).
//   kStatsmodelsApproximate: statsmodels ARIMA's default, a prior of mean 0 and variance 1e6 (in
//     units of y squared) with the first observation left out of the likelihood. For a BTC price in
//     USD (daily variance ~ 1e6..1e7) this prior is informative and shifts the estimates; offered
//     for parity checks with statsmodels, not for production.
//
// Difficulty moves in steps (constant for 2016 blocks, then a jump of a few percent), so it is
// forecast in logs: the model is fitted to log(difficulty), means and bounds are transformed back
// with exp() (the mean becomes the median), and SeriesForecast::log_transformed says so.
//
// Everything here is pure, deterministic and thread-safe.
#pragma once

#include <array>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"

namespace hi::mining {

inline constexpr double kZ95 = 1.959963984540054;  // standard normal 97.5 % quantile
inline constexpr int kMinArimaObservations = 20;   // shortest series fit_arima_111 accepts

enum class DiffuseInit { kExact, kStatsmodelsApproximate };

struct ArimaOptions {
  DiffuseInit init = DiffuseInit::kExact;
  double approximate_diffuse_variance = 1e6;  // only for kStatsmodelsApproximate
  int max_iterations = 500;
};

struct ForecastPoint {
  int horizon_days = 0;  // 1 = the day after the last observation
  double mean = 0;       // point forecast (the median when log_transformed)
  double lower_95 = 0;
  double upper_95 = 0;
};

// A fitted ARIMA(1,1,1). Obtain one with fit_arima_111(); it keeps the Kalman filter's state at the
// end of the sample so it can forecast. A constant series (all differences zero) fits as
// "degenerate": sigma2 = 0, flat forecasts with zero-width intervals.
struct ArimaFit {
  double ar = 0;              // phi
  double ma = 0;              // theta
  double sigma2 = 0;          // innovation variance, in units of y squared
  double log_likelihood = 0;  // over the observations that enter the likelihood
  int observations = 0;       // length of the fitted series
  int iterations = 0;         // optimiser iterations
  bool converged = false;
  bool degenerate = false;
  DiffuseInit init = DiffuseInit::kExact;

  // Filter state after the last observation: predicted [y_n, alpha_{n+1}] and its covariance.
  std::array<double, 3> state{};
  std::array<double, 9> state_cov{};  // row-major 3 x 3

  // Means and 95 % intervals for 1..horizon days ahead, in the units of the fitted series.
  std::vector<ForecastPoint> forecast(int horizon) const;
};

// Fits y (at least kMinArimaObservations finite values). Errors: invalid_argument.
Result<ArimaFit> fit_arima_111(std::span<const double> y, const ArimaOptions& options = {});

// The log-likelihood of y under the given parameters (what the fit maximises); exposed for tests
// and for explaining a fit. Returns -inf when the parameters are outside the stationary/invertible
// region or sigma2 <= 0.
double arima_111_log_likelihood(std::span<const double> y, double ar, double ma, double sigma2,
                                const ArimaOptions& options = {});

struct ForecastOptions {
  int window_days = 90;  // fit on the last window_days values
  int horizon_days = 7;  // forecast this many days ahead
  int holdout_days = 7;  // accuracy: fit on window minus the last holdout_days, predict them
  bool log_transform = false;
  ArimaOptions arima;
};

struct SeriesForecast {
  std::string model;                       // "ARIMA(1,1,1)" or "ARIMA(1,1,1) on log(y)"
  bool log_transformed = false;            // the model was fitted to log(y); see the header comment
  int observations = 0;                    // values used (<= window_days)
  std::vector<ForecastPoint> predictions;  // horizon_days points, in the units of the input
  ArimaFit fit;                            // the fit on all `observations` values (log scale if so)

  // Accuracy on the held-out tail, in the units of the input: the model refitted on the first
  // observations - holdout_days values predicts the last holdout_days.
  std::vector<ForecastPoint> holdout_predictions;
  std::vector<double> holdout_actual;
  double holdout_rmse = 0;
  double holdout_mae = 0;
};

// Forecasts the last `window_days` values of `daily` (oldest first). Needs at least
// kMinArimaObservations + holdout_days values in the window; all finite, and > 0 when
// log_transform. Errors: invalid_argument.
Result<SeriesForecast> forecast_series(std::span<const double> daily,
                                       const ForecastOptions& options = {});

// The two forecasts the intelligence layer shows: BTC price in USD (levels) and network difficulty
// (in logs, log_transformed = true). 90-day window, 7 days ahead, 7-day holdout.
Result<SeriesForecast> forecast_btc_price(std::span<const double> daily_price_usd);
Result<SeriesForecast> forecast_difficulty(std::span<const double> daily_difficulty);

}  // namespace hi::mining
