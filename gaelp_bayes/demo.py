"""The main job on built-in data (``make demo``): fit or reuse, allocate, pace simulated days, report, summarise.

The built-in data is 8 weeks of 3 campaigns bidding a fixed raw bid in the seeded auction world of
``sim.demo_windows``; the test days that follow are paced bid by bid in that same world.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from . import cache, data, sim
from .model.config import CHAINS, DRAWS, TUNE
from .pipeline import fit_cached
from .runtime import PACER_PARTS

DEMO_MODEL = "models/demo"
DEMO_DATA = "models/demo_windows.csv"
DEMO_DAYS = ("2026-03-02", "2026-03-03")  # the two days after the history (a Monday and a Tuesday)


def ensure_model(model_dir: str = DEMO_MODEL, data_path: str = DEMO_DATA, draws: int = DRAWS, tune: int = TUNE,
                 chains: int = CHAINS, progress: bool = True, accept_failed: bool = False
                 ) -> tuple[sim.World, pd.DataFrame, dict]:
    """Write the demo windows and fit them, unless ``model_dir`` holds a passing (or, with ``accept_failed``,
    any) fit of the same data and model version.  Returns the world, the history and the cache's manifest."""
    world, history = sim.demo_windows()
    Path(data_path).parent.mkdir(parents=True, exist_ok=True)
    history.to_csv(data_path, index=False)
    cells = data.aggregate(data.load_windows(data_path))
    print(f"demo posterior {model_dir}: {data_path} ({len(history)} windows, {len(cells.campaigns)} campaigns)",
          file=sys.stderr)
    # the demo's own model: reused when it holds a fit of this data by this model version, else refreshed
    cached = fit_cached(cells, model_dir, reuse=True, accept_failed=accept_failed, draws=draws, tune=tune,
                        chains=chains, seed=0, progress=progress)
    print("  reused the cached fit (same data and model version)" if cached.fit is None else
          f"  fitted in {cached.fit.seconds:.1f} s", file=sys.stderr)
    return world, history, cached.manifest


def paced_day(world: sim.World, campaign: str, budget: float, date: str, model_dir: str = DEMO_MODEL) -> dict:
    """Pace one simulated auction day with the runtime Pacer; the pacer's status at 18:00 and at day end."""
    from .runtime import CampaignPosterior, Pacer

    manifest, arrays = cache.read_runtime(model_dir)
    cache.check_usable(manifest, model_dir, parts=PACER_PARTS)
    c = world.campaigns.index(campaign)
    day = sim.auction_day(world, c, date, seed=100 + 1000 * c)
    posterior = CampaignPosterior.from_cache(arrays, manifest, campaign, when=day.start)[0]
    pacer = Pacer(posterior, budget, manifest["timezone"], now=day.start)  # no journal: a rerun starts afresh
    evening = day.start + 18 * 3600

    def part(keep):
        return sim.AuctionDay(c, day.start, day.times[keep], day.prices[keep], day.cvr[keep], day.converts[keep],
                              day.hours[keep])

    result = sim.replay(part(day.times < evening), pacer, sim.raw_bid(world, c), budget)
    at_18 = pacer.status(now=evening)
    late = sim.replay(part(day.times >= evening), pacer, sim.raw_bid(world, c), budget - result["spent"])
    return {"at_18": at_18, "end": pacer.status(now=day.start + 86_399),
            "spent": result["spent"] + late["spent"], "oracle": sim.oracle_conversions(day, budget),
            "expected_conversions": result["expected_conversions"] + late["expected_conversions"]}


def run(draws: int = DRAWS, tune: int = TUNE, chains: int = CHAINS) -> int:
    """The main job; prints a summary a user can read at a glance.  Exit 4 if the fit failed its gate."""
    from .allocate import allocate
    from .fit_summary import print_fit_summary
    from .report import build_report, figure_folder

    start = time.perf_counter()
    world, history, _ = ensure_model(draws=draws, tune=tune, chains=chains)
    manifest, arrays = cache.read_runtime(DEMO_MODEL)
    print_fit_summary(DEMO_MODEL, manifest, arrays)
    failed = [p for p in cache.failed_parts(manifest) if p in PACER_PARTS]
    if failed:
        print(f"\nthe demo fit failed its diagnostics gate in {cache.parts_phrase(failed)}: see "
              f"{DEMO_MODEL}/manifest.json", file=sys.stderr)
        return 4
    campaign = manifest["campaigns"][0]
    budget = sim.usual_budget(history, campaign)
    plan = allocate(DEMO_MODEL, budget, campaign=campaign, date=DEMO_DAYS[0])
    print("\n" + plan.table())

    day = paced_day(world, campaign, budget, DEMO_DAYS[0])
    s18, end = day["at_18"], day["end"]
    print(f"\nPacing {campaign} on {DEMO_DAYS[0]} bid by bid with the runtime Pacer (simulated auctions):")
    print(f"  at 18:00  spent {s18['spent']:.2f} of {budget:.2f} (utilization {s18['utilization']:.0%}, plan "
          f"{s18['planned_spend_so_far']:.2f}), budget multiplier {s18['multiplier']:.2f}, "
          f"{s18['conversions_today']} conversions so far")
    print(f"  day end   spent {day['spent']:.2f} ({end['utilization']:.1%} of the budget, never more), "
          f"{day['expected_conversions']:.1f} expected conversions = "
          f"{100 * day['expected_conversions'] / day['oracle']:.1f}% of a hindsight oracle")

    res = sim.compare_policies(world, history, DEMO_MODEL, list(DEMO_DAYS), policies=("oracle", "even", "legacy",
                                                                                    "bayes"))
    table = sim.summarize(res)
    print(f"\nAll {len(world.campaigns)} campaigns x {len(DEMO_DAYS)} days (budget = half of each campaign's "
          "usual daily spend; conversions as % of the hindsight oracle):")
    print(f"  {'policy':<8} {'% of oracle':>11} {'spend/budget':>12} {'overspend':>9} {'ran dry (days)':>14}")
    for name, row in table.iterrows():
        print(f"  {name:<8} {row['pct_of_oracle']:>11.1f} {row['spend_over_budget']:>12.3f} "
              f"{row['max_overspend']:>9.2f} {int(row['days_ran_dry']):>14d}")
    bayes, even, legacy = (table.loc[p, "pct_of_oracle"] for p in ("bayes", "even", "legacy"))
    print(f"  bayes (this engine) gets {bayes / even:.2f}x the conversions of even pacing and {bayes / legacy:.2f}x "
          "those of the old optimiser's rules (legacy), within the same budgets.")

    report = build_report(DEMO_MODEL, budget=budget, date=DEMO_DAYS[0], campaign=campaign, overwrite=True)
    print(f"\nUncertainty report: {report} (figures in {figure_folder(report)}/)")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; the model is in {DEMO_MODEL}/, the windows in "
          f"{DEMO_DATA}")
    return 0
