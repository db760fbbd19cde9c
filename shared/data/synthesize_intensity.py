#!/usr/bin/env python3
"""Writes carbon-intensity-synthetic-2026.csv: one synthetic year of hourly carbon intensity for
three zones, in the columns of the Electricity Maps data portal's hourly CSV files.

The values are SYNTHETIC: shaped after the public yearly profiles of each grid (not copied from
them), deterministic (a fixed seed), and meant for tests, the demo and offline use. They are not
measurements; a grid that credits real members should load a licensed export of the Electricity
Maps data portal (same columns) through GRID_CARBON_FILE.

- FR: flat and low (nuclear and hydro): ~55 g/kWh life-cycle, a small winter rise, a small
  evening peak.
- DE: high and swinging (coal, gas, wind, solar): ~400 g/kWh life-cycle, a deep solar dip at
  midday in summer, multi-day wind lulls and gusts, an evening peak.
- BE: between (nuclear, gas, wind, solar): ~170 g/kWh life-cycle, a moderate solar dip.

The direct (combustion only) figure is the life-cycle one less the zone's upstream share.

Run: python3 shared/data/synthesize_intensity.py > shared/data/carbon-intensity-synthetic-2026.csv
"""
import math
import random
from datetime import datetime, timedelta, timezone

ZONES = {
    # zone: (mean LCA, winter rise, solar dip at summer noon, evening peak, wind swing, floor, ceiling, direct share)
    "BE": (170.0, 30.0, 70.0, 20.0, 45.0, 60.0, 330.0, 0.80),
    "DE": (400.0, 60.0, 210.0, 45.0, 130.0, 110.0, 760.0, 0.88),
    "FR": (55.0, 18.0, 6.0, 8.0, 6.0, 25.0, 110.0, 0.55),
}


def main():
    rng = random.Random(20261204)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    print("Datetime (UTC),Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)")
    for zone, (mean, winter, dip, evening, wind_swing, floor, ceiling, direct_share) in ZONES.items():
        wind = 0.0
        for hour in range(365 * 24):
            at = start + timedelta(hours=hour)
            day_of_year = at.timetuple().tm_yday
            # 1 in mid-winter, -1 in mid-summer.
            season = math.cos(2 * math.pi * (day_of_year - 15) / 365)
            # Solar: a bell around 12:00 UTC, wider and deeper in summer.
            daylight = max(0.0, math.cos(math.pi * (at.hour + 0.5 - 12.0) / (12.0 + 2.0 * -season)))
            solar = dip * (0.35 + 0.65 * (1 - season) / 2) * daylight ** 2
            peak = evening * math.exp(-((at.hour - 18.5) ** 2) / 4.0)
            # Wind: a slow random walk pulled back to zero (lulls and gusts over days).
            wind = 0.97 * wind + rng.gauss(0.0, 0.25)
            value = mean + winter * season - solar + peak - wind_swing * math.tanh(wind)
            value += rng.gauss(0.0, mean * 0.015)
            lca = min(ceiling, max(floor, value))
            print(f"{at:%Y-%m-%d %H:%M:%S},{zone},{lca * direct_share:.1f},{lca:.1f}")


if __name__ == "__main__":
    main()
