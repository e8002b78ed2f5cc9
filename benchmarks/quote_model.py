"""Quote-model accuracy: ``data check-quotes`` over several horizons, the band the product trades
(|delta| 0.30-0.60, 7-30 DTE) by volatility source, plus the time the scoring takes.

Run by hand: ``.venv/bin/python benchmarks/quote_model.py [--data DIR] [--horizons 30m,2h,1d,5d]``.
Record the figures in docs/quotes.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path

from ops_pipeline.adapters.market_data.calendar import TradingCalendar
from ops_pipeline.cli.common import default_data_dir
from ops_pipeline.services import quote_check

UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--horizons", default="30m,2h,1d,5d")
    args = parser.parse_args()
    started = time.perf_counter()
    market = quote_check.load_check_market(args.data or default_data_dir(), TradingCalendar())
    lags = quote_check.lag_summary(market.chains.timings())
    print(f"{platform.node()} {platform.processor() or platform.machine()} python {platform.python_version()} "
          f"{dt.date.today()}; chains parsed and timed in {time.perf_counter() - started:.1f}s")
    print(f"quote lag: {lags.snapshots} snapshots, median {lags.median:.0f} min, p10-p90 {lags.p10:.0f}-{lags.p90:.0f}, "
          f"{lags.by_parity} by parity")
    print(f"{'H':>4} {'source':<9} {'quotes':>7} {'median%':>8} {'p90%':>6} {'bias%':>6} {'inside%':>7} "
          f"{'real$':>6} {'model$':>7} {'spread bias$':>12} {'RT bias$':>8}")
    for text in args.horizons.split(","):
        horizon = dt.timedelta(**{UNITS[text[-1]]: float(text[:-1])})
        t0 = time.perf_counter()
        obs = quote_check.observations(market, horizon)
        groups = {"all": quote_check.target_band(obs)} | quote_check.by_vol_source(obs)
        for source, f in groups.items():
            print(f"{text:>4} {source:<9} {f['n']:>7} {f['median_error_pct']:>8.1f} {f['p90_error_pct']:>6.1f} "
                  f"{f['bias_pct']:>+6.1f} {f['inside_pct']:>7.0f} {f['real_spread']:>6.2f} {f['model_spread']:>7.2f} "
                  f"{f['spread_bias']:>+12.2f} {f['round_trip_bias']:>+8.2f}")
        print(f"     ({len(obs):,} quotes scored in {time.perf_counter() - t0:.1f}s)")


if __name__ == "__main__":
    main()
