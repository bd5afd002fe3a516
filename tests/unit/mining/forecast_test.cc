#include "mining/forecast.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace hi::mining {
namespace {

// ---------------------------------------------------------------------------------------------
// The Kalman-filter likelihood against closed forms.

// Exact Gaussian log-likelihood of a zero-mean ARMA(1,1) sample z by brute force: build the
// autocovariance matrix Gamma, Cholesky-factor it, -0.5 (n log 2pi + log det Gamma + z' Gamma^-1
// z).
//   gamma0 = s2 (1 + 2 phi theta + theta^2) / (1 - phi^2)
//   gamma1 = s2 (1 + phi theta) (phi + theta) / (1 - phi^2),  gamma_k = phi gamma_{k-1} (k >= 2)
double brute_force_arma_loglik(const std::vector<double>& z, double phi, double theta, double s2) {
  const std::size_t n = z.size();
  std::vector<double> gamma(n);
  gamma[0] = s2 * (1 + 2 * phi * theta + theta * theta) / (1 - phi * phi);
  if (n > 1) gamma[1] = s2 * (1 + phi * theta) * (phi + theta) / (1 - phi * phi);
  for (std::size_t k = 2; k < n; ++k) gamma[k] = phi * gamma[k - 1];
  std::vector<double> l(n * n, 0.0);  // Cholesky factor, lower
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j <= i; ++j) {
      double sum = gamma[i - j];
      for (std::size_t k = 0; k < j; ++k) sum -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = i == j ? std::sqrt(sum) : sum / l[j * n + j];
    }
  }
  double logdet = 0, quad = 0;
  std::vector<double> w(n);  // L w = z
  for (std::size_t i = 0; i < n; ++i) {
    double sum = z[i];
    for (std::size_t k = 0; k < i; ++k) sum -= l[i * n + k] * w[k];
    w[i] = sum / l[i * n + i];
    quad += w[i] * w[i];
    logdet += 2 * std::log(l[i * n + i]);
  }
  return -0.5 * (static_cast<double>(n) * std::log(2 * std::numbers::pi) + logdet + quad);
}

std::vector<double> small_series() {
  return {100.0, 101.5, 100.7, 102.9, 104.0, 103.1, 105.6, 106.2, 105.0, 107.3,
          108.8, 108.1, 110.4, 109.9, 111.7, 113.0, 112.2, 114.5, 115.1, 114.0};
}

TEST(MiningArimaLikelihood, MatchesBruteForceGaussianLikelihoodOfTheDifferences) {
  // Exact diffuse initialisation = the exact likelihood of the ARMA(1,1) of the differences.
  const std::vector<double> y = small_series();
  std::vector<double> z;
  for (std::size_t t = 1; t < y.size(); ++t) z.push_back(y[t] - y[t - 1]);
  for (const auto& [phi, theta, s2] : {std::tuple{0.5, 0.3, 1.7}, std::tuple{-0.6, 0.4, 0.9},
                                       std::tuple{0.9, -0.8, 2.5}, std::tuple{0.0, 0.0, 1.0}}) {
    SCOPED_TRACE(testing::Message() << "phi " << phi << " theta " << theta);
    EXPECT_NEAR(arima_111_log_likelihood(y, phi, theta, s2),
                brute_force_arma_loglik(z, phi, theta, s2), 1e-9);
  }
}

TEST(MiningArimaLikelihood, WhiteNoiseDifferencesByHand) {
  // phi = theta = 0: sum over t of -0.5 (log(2 pi s2) + z_t^2 / s2).
  const std::vector<double> y = {10, 12, 11, 11, 14};  // z = 2, -1, 0, 3: sum z^2 = 14
  // s2 = 2: -0.5 (4 log(4 pi) + 14 / 2) = -2 log(4 pi) - 3.5 = -8.562...
  EXPECT_NEAR(arima_111_log_likelihood(y, 0, 0, 2), -2 * std::log(4 * std::numbers::pi) - 3.5,
              1e-12);
}

TEST(MiningArimaLikelihood, OutsideTheRegionIsMinusInfinity) {
  const std::vector<double> y = small_series();
  EXPECT_EQ(arima_111_log_likelihood(y, 1.0, 0.0, 1.0), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(arima_111_log_likelihood(y, 0.0, -1.2, 1.0), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(arima_111_log_likelihood(y, 0.0, 0.0, 0.0), -std::numeric_limits<double>::infinity());
}

TEST(MiningArimaForecast, RandomWalkForecastByHand) {
  // With phi = theta = 0 the model is a random walk: the forecast is the last value and the
  // h-step variance h x sigma2. Degenerate-free check of ArimaFit::forecast().
  Result<ArimaFit> fit = fit_arima_111(small_series());
  ASSERT_TRUE(fit.ok());
  ArimaFit rw = *fit;
  rw.ar = 0;
  rw.ma = 0;
  rw.sigma2 = 4;
  rw.state = {114.0, 0, 0};
  rw.state_cov = {0, 0, 0, 0, 4, 0, 0, 0, 0};
  const auto points = rw.forecast(3);
  ASSERT_EQ(points.size(), 3u);
  for (int h = 1; h <= 3; ++h) {
    const auto& p = points[static_cast<std::size_t>(h - 1)];
    EXPECT_EQ(p.horizon_days, h);
    EXPECT_DOUBLE_EQ(p.mean, 114.0);
    // 95 % half-width = 1.959964 x sqrt(4 h): h=1 -> 3.919928
    EXPECT_NEAR(p.upper_95 - p.mean, kZ95 * std::sqrt(4.0 * h), 1e-12);
    EXPECT_NEAR(p.mean - p.lower_95, kZ95 * std::sqrt(4.0 * h), 1e-12);
  }
}

TEST(MiningArimaFit, RecoversParametersOfASimulatedSeries) {
  // 2000 steps of ARIMA(1,1,1) with phi 0.6, theta 0.3, sigma 1 from a fixed LCG + Box-Muller.
  std::uint64_t state = 42;
  auto uniform = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (static_cast<double>(state >> 11) + 0.5) / 9007199254740992.0;
  };
  std::vector<double> y = {0};
  double prev_z = 0, prev_e = 0;
  for (int t = 0; t < 2000; ++t) {
    const double e =
        std::sqrt(-2 * std::log(uniform())) * std::cos(2 * std::numbers::pi * uniform());
    const double z = 0.6 * prev_z + e + 0.3 * prev_e;
    y.push_back(y.back() + z);
    prev_z = z;
    prev_e = e;
  }
  Result<ArimaFit> fit = fit_arima_111(y);
  ASSERT_TRUE(fit.ok());
  EXPECT_TRUE(fit->converged);
  EXPECT_NEAR(fit->ar, 0.6, 0.06);
  EXPECT_NEAR(fit->ma, 0.3, 0.06);
  EXPECT_NEAR(fit->sigma2, 1.0, 0.08);
}

TEST(MiningArimaFit, ConstantSeriesIsDegenerateNotNaN) {
  const std::vector<double> y(30, 5e13);
  Result<ArimaFit> fit = fit_arima_111(y);
  ASSERT_TRUE(fit.ok());
  EXPECT_TRUE(fit->degenerate);
  for (const ForecastPoint& p : fit->forecast(7)) {
    EXPECT_EQ(p.mean, 5e13);
    EXPECT_EQ(p.lower_95, 5e13);
    EXPECT_EQ(p.upper_95, 5e13);
  }
}

TEST(MiningArimaFit, RejectsBadInput) {
  EXPECT_EQ(fit_arima_111(std::vector<double>(19, 1.0)).error().code, Code::kInvalidArgument);
  std::vector<double> y = small_series();
  y[7] = std::numeric_limits<double>::quiet_NaN();
  Result<ArimaFit> r = fit_arima_111(y);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("series[7]"), std::string::npos) << r.error().message;
  y[7] = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(fit_arima_111(y).ok());
}

TEST(MiningForecastSeries, ValidatesInput) {
  std::vector<double> short_series(26, 1.0);
  Result<SeriesForecast> r = forecast_btc_price(short_series);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("at least 27"), std::string::npos) << r.error().message;

  std::vector<double> d(60, 8e13);
  d[59] = 0;
  r = forecast_difficulty(d);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("> 0"), std::string::npos) << r.error().message;

  std::vector<double> p(60, 60000);
  p[3] = -1;
  EXPECT_FALSE(forecast_btc_price(p).ok());

  ForecastOptions bad;
  bad.horizon_days = 0;
  EXPECT_FALSE(forecast_series(std::vector<double>(60, 1.0), bad).ok());
}

TEST(MiningForecastSeries, UsesOnlyTheLastWindow) {
  // Garbage (but valid) values before the last 90 days must not matter.
  std::vector<double> y;
  for (int i = 0; i < 90; ++i) y.push_back(60000 + 500 * std::sin(i * 0.7) + 40.0 * i);
  Result<SeriesForecast> a = forecast_btc_price(y);
  std::vector<double> longer(50, 1.0);
  longer.insert(longer.end(), y.begin(), y.end());
  Result<SeriesForecast> b = forecast_btc_price(longer);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->observations, 90);
  EXPECT_EQ(a->predictions[6].mean, b->predictions[6].mean);
}

// ---------------------------------------------------------------------------------------------
// Against statsmodels (tests/data/mining/forecast_reference.json, from
// generate_forecast_reference.py on tests/data/mining/forecast_series.csv).

struct Series {
  std::vector<double> price;
  std::vector<double> difficulty;
};

Series load_series() {
  std::ifstream in(std::string(HI_MINING_TEST_DATA_DIR) + "/forecast_series.csv");
  Series s;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::stringstream row(line);
    std::string day, price, difficulty;
    std::getline(row, day, ',');
    std::getline(row, price, ',');
    std::getline(row, difficulty, ',');
    s.price.push_back(std::stod(price));
    s.difficulty.push_back(std::stod(difficulty));
  }
  return s;
}

nlohmann::json load_reference() {
  std::ifstream in(std::string(HI_MINING_TEST_DATA_DIR) + "/forecast_reference.json");
  return nlohmann::json::parse(in);
}

// Our forecast vs a statsmodels forecast: point forecasts within `mean_tol` (relative), 95 %
// half-widths within `width_tol` (relative).
void expect_forecasts_close(const std::vector<ForecastPoint>& ours, const nlohmann::json& theirs,
                            double mean_tol, double width_tol) {
  ASSERT_EQ(ours.size(), theirs.size());
  for (std::size_t h = 0; h < ours.size(); ++h) {
    SCOPED_TRACE(testing::Message() << "horizon " << h + 1);
    const double mean = theirs[h]["mean"];
    const double lower = theirs[h]["lower"];
    const double upper = theirs[h]["upper"];
    EXPECT_NEAR(ours[h].mean / mean, 1.0, mean_tol) << ours[h].mean << " vs " << mean;
    EXPECT_NEAR((ours[h].upper_95 - ours[h].lower_95) / (upper - lower), 1.0, width_tol)
        << "[" << ours[h].lower_95 << ", " << ours[h].upper_95 << "] vs [" << lower << ", " << upper
        << "]";
  }
}

class MiningForecastReference : public ::testing::Test {
 protected:
  Series series_ = load_series();
  nlohmann::json ref_ = load_reference();
};

TEST_F(MiningForecastReference, DataIsTheCommittedSeries) {
  ASSERT_EQ(series_.price.size(), 90u);
  ASSERT_EQ(series_.difficulty.size(), 90u);
  EXPECT_EQ(ref_["price"]["exact_diffuse"]["holdout"]["nobs"], 83);
}

TEST_F(MiningForecastReference, PriceMatchesStatsmodelsExactDiffuse) {
  // The production set-up. statsmodels: SARIMAX(order=(1,1,1), use_exact_diffuse=True).
  Result<SeriesForecast> f = forecast_btc_price(series_.price);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  EXPECT_FALSE(f->log_transformed);
  EXPECT_EQ(f->observations, 90);
  EXPECT_TRUE(f->fit.converged);
  const auto& full = ref_["price"]["exact_diffuse"]["full"];
  EXPECT_NEAR(f->fit.ar, full["ar"].get<double>(), 0.01);
  EXPECT_NEAR(f->fit.ma, full["ma"].get<double>(), 0.01);
  EXPECT_NEAR(f->fit.sigma2 / full["sigma2"].get<double>(), 1.0, 0.01);
  // We find the maximum at least as well as statsmodels' L-BFGS does.
  EXPECT_GE(f->fit.log_likelihood + 1e-6,
            arima_111_log_likelihood(series_.price, full["ar"], full["ma"], full["sigma2"]));
  expect_forecasts_close(f->predictions, full["forecast"], 1e-4, 0.01);

  const auto& hold = ref_["price"]["exact_diffuse"]["holdout"];
  expect_forecasts_close(f->holdout_predictions, hold["forecast"], 1e-4, 0.01);
  EXPECT_NEAR(f->holdout_rmse / hold["rmse"].get<double>(), 1.0, 0.01);
  EXPECT_NEAR(f->holdout_mae / hold["mae"].get<double>(), 1.0, 0.01);
  ASSERT_EQ(f->holdout_actual.size(), 7u);
  EXPECT_EQ(f->holdout_actual.front(), series_.price[83]);
}

TEST_F(MiningForecastReference, PriceWithinOnePercentOfStatsmodelsArimaDefault) {
  // statsmodels ARIMA(order=(1,1,1)).fit() as is (approximate diffuse prior, variance 1e6):
  // reproduced with DiffuseInit::kStatsmodelsApproximate.
  ForecastOptions o;
  o.arima.init = DiffuseInit::kStatsmodelsApproximate;
  Result<SeriesForecast> f = forecast_series(series_.price, o);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  const auto& full = ref_["price"]["arima_default"]["full"];
  EXPECT_NEAR(f->fit.ar, full["ar"].get<double>(), 0.02);
  EXPECT_NEAR(f->fit.ma, full["ma"].get<double>(), 0.02);
  // The brief's bar is 1 %; the agreement is in fact better than 0.01 %.
  expect_forecasts_close(f->predictions, full["forecast"], 1e-3, 0.01);
  expect_forecasts_close(f->holdout_predictions,
                         ref_["price"]["arima_default"]["holdout"]["forecast"], 1e-3, 0.01);
}

TEST_F(MiningForecastReference, TheTwoPriorsDifferByAboutOnePercentOnPrice) {
  // Documents the gap between statsmodels' two set-ups on a USD price: our production forecast
  // (exact diffuse) vs plain ARIMA(1,1,1).fit() differ by up to 1.25 % (at 3-4 days ahead). Both
  // reproduce their statsmodels counterpart to < 0.01 % (the tests above).
  Result<SeriesForecast> f = forecast_btc_price(series_.price);
  ASSERT_TRUE(f.ok());
  const auto& theirs = ref_["price"]["arima_default"]["full"]["forecast"];
  double worst = 0;
  for (std::size_t h = 0; h < 7; ++h) {
    worst = std::max(worst, std::abs(f->predictions[h].mean / theirs[h]["mean"].get<double>() - 1));
  }
  EXPECT_GT(worst, 0.005);
  EXPECT_LT(worst, 0.015);
}

TEST_F(MiningForecastReference, DifficultyIsForecastInLogsAndMatchesStatsmodels) {
  Result<SeriesForecast> f = forecast_difficulty(series_.difficulty);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  EXPECT_TRUE(f->log_transformed);
  EXPECT_EQ(f->model, "ARIMA(1,1,1) on log(y)");
  // Steps in a log series: white noise in the differences, so the forecast is flat at the last
  // value (exactly what statsmodels gives as well) and the interval widens like sqrt(h).
  for (const auto& [setup, mean_tol, width_tol] :
       {std::tuple{"exact_diffuse", 1e-6, 0.01}, std::tuple{"arima_default", 0.01, 0.05}}) {
    SCOPED_TRACE(setup);
    expect_forecasts_close(f->predictions, ref_["difficulty"][setup]["full"]["forecast"], mean_tol,
                           width_tol);
    expect_forecasts_close(f->holdout_predictions, ref_["difficulty"][setup]["holdout"]["forecast"],
                           mean_tol, width_tol);
  }
  EXPECT_NEAR(f->predictions[0].mean / series_.difficulty.back(), 1.0, 1e-6);
  const auto& hold = ref_["difficulty"]["exact_diffuse"]["holdout"];
  EXPECT_NEAR(f->holdout_rmse / hold["rmse"].get<double>(), 1.0, 1e-4);
  EXPECT_NEAR(f->holdout_mae / hold["mae"].get<double>(), 1.0, 1e-4);
}

TEST_F(MiningForecastReference, DeterministicAcrossRuns) {
  Result<SeriesForecast> a = forecast_btc_price(series_.price);
  Result<SeriesForecast> b = forecast_btc_price(series_.price);
  ASSERT_TRUE(a.ok() && b.ok());
  for (std::size_t h = 0; h < 7; ++h) {
    EXPECT_EQ(a->predictions[h].mean, b->predictions[h].mean);
    EXPECT_EQ(a->predictions[h].upper_95, b->predictions[h].upper_95);
  }
}

}  // namespace
}  // namespace hi::mining
