#!/usr/bin/python3
"""Generates the ARIMA(1,1,1) reference numbers the mining forecast test compares against.

Run once with Debian's statsmodels (python3-statsmodels) from this directory:

    /usr/bin/python3 generate_forecast_reference.py

It writes two files, both committed:
  forecast_series.csv       90 daily values of a BTC price and a network difficulty. They come from a
                            fixed-seed generator, but the CSV (not the generator) is the source of truth:
                            the C++ test reads the very same numbers.
  forecast_reference.json   statsmodels' fit and 7-day forecast for each series, for the full window
                            and for the hold-out fit (first n-7 days, predicting the last 7).

Two statsmodels set-ups, both ARIMA(1,1,1) without trend, stationarity and invertibility enforced,
exact Gaussian likelihood by the Kalman filter, L-BFGS from Hannan-Rissanen starting values:
  "arima_default"  statsmodels.tsa.arima.model.ARIMA(y, order=(1, 1, 1)).fit() as is. Its integrated
                   (level) state gets statsmodels' *approximate* diffuse prior, variance 1e6 in the units
                   of y squared, and the first observation is burned from the likelihood. For a price in
                   USD (daily sigma^2 ~ 3e6) that prior is not diffuse at all and pulls the fit.
  "exact_diffuse"  the same model as SARIMAX(y, order=(1, 1, 1), trend="n", use_exact_diffuse=True):
                   the level is exactly diffuse, i.e. the likelihood of the ARMA(1,1) on the first
                   differences. Scale invariant; this is the C++ forecaster's default.
The difficulty series is modelled in logs and transformed back with exp() (median forecast and
exp() of the interval bounds), exactly as the C++ forecaster does.
"""
import csv
import json
import math
import random

import warnings

import numpy as np
import statsmodels
from statsmodels.tsa.arima.model import ARIMA
from statsmodels.tsa.statespace.sarimax import SARIMAX

N = 90
HORIZON = 7
ALPHA = 0.05


def make_series():
    rng = random.Random(20240420)
    # BTC price: an ARIMA(1,1,1) path (phi 0.45, theta 0.25, sigma 1500 USD) starting at 62,000 USD.
    price = [62000.0]
    prev_z, prev_e = 0.0, 0.0
    for _ in range(N - 1):
        e = rng.gauss(0.0, 1500.0)
        z = 0.45 * prev_z + e + 0.25 * prev_e
        price.append(round(price[-1] + z, 2))
        prev_z, prev_e = z, e
    # Difficulty: constant within an epoch of 14 days, then a step of +1.8 % +- 2.5 % (log scale).
    difficulty = []
    d = 8.3e13
    for day in range(N):
        if day > 0 and day % 14 == 0:
            d = d * math.exp(rng.gauss(0.018, 0.025))
        difficulty.append(float(round(d)))
    return price, difficulty


def fit_and_forecast(values, log_transform, setup):
    y = np.log(values) if log_transform else np.asarray(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if setup == "arima_default":
            res = ARIMA(y, order=(1, 1, 1)).fit()
        else:
            res = SARIMAX(y, order=(1, 1, 1), trend="n", use_exact_diffuse=True).fit(disp=False)
    fc = res.get_forecast(HORIZON)
    mean = np.asarray(fc.predicted_mean)
    ci = np.asarray(fc.conf_int(alpha=ALPHA))
    if log_transform:
        mean, ci = np.exp(mean), np.exp(ci)
    params = dict(zip(res.model.param_names, res.params))
    return {
        "nobs": len(values),
        "ar": float(params["ar.L1"]),
        "ma": float(params["ma.L1"]),
        "sigma2": float(params["sigma2"]),
        "llf": float(res.llf),
        "forecast": [
            {"horizon": h + 1, "mean": float(mean[h]), "lower": float(ci[h, 0]),
             "upper": float(ci[h, 1])}
            for h in range(HORIZON)
        ],
    }


def reference(values, log_transform):
    out = {"log_transform": log_transform}
    for setup in ("arima_default", "exact_diffuse"):
        full = fit_and_forecast(values, log_transform, setup)
        hold = fit_and_forecast(values[: N - HORIZON], log_transform, setup)
        actual = values[N - HORIZON:]
        err = [f["mean"] - a for f, a in zip(hold["forecast"], actual)]
        hold["actual"] = actual
        hold["rmse"] = math.sqrt(sum(e * e for e in err) / len(err))
        hold["mae"] = sum(abs(e) for e in err) / len(err)
        out[setup] = {"full": full, "holdout": hold}
    return out


def main():
    price, difficulty = make_series()
    with open("forecast_series.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["day", "btc_price_usd", "difficulty"])
        for i, (p, d) in enumerate(zip(price, difficulty)):
            w.writerow([i, f"{p:.2f}", f"{d:.0f}"])
    # Re-read what was written so the reference is computed on exactly the committed numbers.
    with open("forecast_series.csv") as f:
        rows = list(csv.DictReader(f))
    price = [float(r["btc_price_usd"]) for r in rows]
    difficulty = [float(r["difficulty"]) for r in rows]
    out = {
        "generator": "generate_forecast_reference.py",
        "statsmodels_version": statsmodels.__version__,
        "model": "ARIMA(1,1,1), no trend, exact Gaussian MLE (Kalman filter)",
        "horizon": HORIZON,
        "alpha": ALPHA,
        "price": reference(price, False),
        "difficulty": reference(difficulty, True),
    }
    with open("forecast_reference.json", "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
