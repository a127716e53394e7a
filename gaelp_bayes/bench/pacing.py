"""Benchmarks of pacing: policies beside a hindsight oracle, and every simulate scenario."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


from .common import (_engine_line, _header, _markdown, _named, _write)
from ..pipeline import fit_cached


REGIMES = {  # name: (history days, base conversion rate range, traffic scale, world seed)
    "rich": (35, (0.01, 0.08), 10.0, 41),
    "sparse": (6, (0.008, 0.012), 10.0, 42),
}


def bench_pacing(regimes: list[str], draws: int = 1000, bid_caps: tuple[float, ...] = (0.10, 1.0),
                 engine: str = "auto") -> None:
    """Conversions as % of the hindsight oracle per policy, per history regime (fit on history, pace 7 test days)."""
    import pandas as pd

    from .. import data, sim

    lines = _header("Pacing policies in a simulated second-price auction world (3 campaigns x 7 test days)") + [
        "Oracle: hindsight optimum (knows every opportunity's price and true rate). Conversions are expected "
        "conversions from the true rates of the opportunities won. Budget: half of each campaign's mean daily "
        "spend at the logged raw bid. `bayes`/`plugin` use the same pacer; `bid cap` is the contract's "
        "single-bid cap as a share of the hour's allocation (0.10 by default; 1.0 relaxes it).", ""]
    for regime in regimes:
        days, cvr_range, scale, seed = REGIMES[regime]
        world = sim.make_world(campaigns=3, seed=seed, base_cvr=cvr_range, volume_scale=scale)
        history = sim.log_auction_history(world, days=days, seed=seed + 1)
        cells = data.aggregate(data.load_windows(history))
        start = pd.Timestamp("2026-01-05") + pd.Timedelta(days=days)
        test_days = [str(start + pd.Timedelta(days=i))[:10] for i in range(7)]
        with tempfile.TemporaryDirectory() as tmp:
            fitted = fit_cached(cells, Path(tmp) / "m", draws=draws, tune=draws, progress=False, seed=seed,
                                engine=engine).fit
            for cap in bid_caps:
                t0 = time.perf_counter()
                res = sim.compare_policies(world, history, str(Path(tmp) / "m"), test_days,
                                           pacer_kwargs={"plan_options": {"bid_cap_share": cap}})
                table = sim.summarize(res)
                lines += [f"## {regime} history: {days} days, {history['conversions'].sum()} conversions from "
                          f"{history['clicks'].sum()} clicks; bid cap {cap:.2f}",
                          f"fit gate: {'pass' if fitted.diagnostics.passed else 'FAIL ' + '; '.join(fitted.diagnostics.failures)}; "
                          f"replay {time.perf_counter() - t0:.0f} s", "", _markdown(table), ""]
                print("\n".join(lines[-5:]), flush=True)
    _write(_named("pacing", engine), lines + [_engine_line(fitted)])


def bench_scenarios(seed: int = 41, days: int = 7, campaigns: int = 3, engine: str = "auto") -> None:
    """``gaelp-bayes simulate`` over every scenario (tables and figures in reports/simulation/)."""
    from .. import sim

    out = Path("reports/simulation")
    code = subprocess.run([sys.executable, "-m", "gaelp_bayes", "simulate", "--scenario", ",".join(sim.SCENARIOS),
                           "--days", str(days), "--campaigns", str(campaigns), "--seed", str(seed), "--out", str(out),
                           "--engine", engine]).returncode  # the command as a user runs it
    if code != 0:
        raise SystemExit(f"simulate failed with exit code {code}")
    body = (out / "summary.md").read_text().splitlines()[1:]
    lines = _header(f"Scenarios: {campaigns} campaigns x {days} test days, world seed {seed}") + [
        "Conversions as % of the hindsight oracle (`pct_lo`/`pct_hi`: 5-95% over campaign-days). `dual` is a "
        "plain dual-multiplier pacer on smoothed empirical hourly rates (no Bayes); `bayes-static` is the same "
        "pacer as `bayes` with online learning off (the baseline for learning: of rates and of the market); "
        "`bayes-pi` and `bayes-dg` the same pacer with a PI controller on the morning's curve (the default "
        "before) or Balseiro & Gur's dual-gradient update instead of its re-solving controller. "
        "Figures: reports/simulation/.", "", "## Summary: mean % of the oracle", "",
        *scenario_summary(out / "results.csv"), "", "## Detail", *body]
    _write(_named("scenarios", engine), lines + ["", f"Posteriors fitted by the `{engine}` engine."])


def scenario_summary(results_csv: Path) -> list[str]:
    """A Markdown table from ``simulate``'s results.csv: mean % of the oracle per scenario and policy, and
    the largest overspend of any policy."""
    import pandas as pd

    results = pd.read_csv(results_csv)
    results = results[results["policy"] != "oracle"]
    table = results.pivot_table(index="scenario", columns="policy", values="pct_of_oracle", aggfunc="mean",
                                sort=False)
    policies = list(dict.fromkeys(results["policy"]))
    overspend = results.groupby("scenario", sort=False)["overspend"].max()
    lines = ["| scenario | " + " | ".join(policies) + " | max overspend |",
             "|---|" + "---|" * (len(policies) + 1)]
    for scenario, row in table.iterrows():
        lines.append(f"| {scenario} | " + " | ".join(f"{row[p]:.1f}" for p in policies)
                     + f" | {overspend[scenario]:.2f} |")
    return lines


ACCOUNT_SEEDS = (101, 103, 107)  # world seeds the account pacer was never looked at on before this benchmark


def bench_account(seeds: tuple[int, ...] = ACCOUNT_SEEDS, days: int = 3, engine: str = "auto") -> None:
    """``gaelp-bayes simulate --scenario account`` on several worlds: one budget over ten campaigns, the
    account pacer beside fixed splits (by past spend, by the account plan made at midnight) and the
    account's hindsight oracle (tables in reports/simulation-account/)."""
    import pandas as pd

    rows = []
    for seed in seeds:
        out = Path(f"reports/simulation-account/seed-{seed}")
        code = subprocess.run([sys.executable, "-m", "gaelp_bayes", "simulate", "--scenario", "account", "--days",
                               str(days), "--volume-scale", "1", "--seed", str(seed), "--out", str(out),
                               "--engine", engine, "--overwrite"]).returncode  # the command as a user runs it
        if code != 0:
            raise SystemExit(f"simulate failed with exit code {code}")
        rows.append(pd.read_csv(out / "results.csv").assign(seed=seed))
    results = pd.concat(rows, ignore_index=True)
    results = results[results["policy"] != "oracle"]
    table = results.pivot_table(index="seed", columns="policy", values="pct_of_oracle", aggfunc="mean", sort=False)
    spend = results.groupby("policy", sort=False).apply(lambda x: x["spent"].sum() / x["budget"].sum(),
                                                        include_groups=False)
    policies = list(table.columns)
    lines = _header(f"Account: one budget over 10 campaigns, {days} test days per world, world seeds "
                    f"{', '.join(map(str, seeds))}") + [
        "Expected conversions as % of the account's hindsight oracle (the opportunities of any campaign with the "
        "most conversions per dollar, until the budget is spent), per world. `split-by-spend`: each campaign's "
        "bayes pacer on a fixed share of the budget in proportion to its usual spend; `split-by-plan`: fixed shares "
        "from the account plan made at midnight (`allocate --account`); `account`: the account pacer "
        "(`AccountPacer`), which splits what is left again every 15 minutes. The first campaign converts at twice "
        "its rate from 12:00 to 18:00 of every test day.", "",
        "| world seed | " + " | ".join(policies) + " |", "|---|" + "---|" * len(policies)]
    for seed, row in table.iterrows():
        lines.append(f"| {seed} | " + " | ".join(f"{row[p]:.1f}" for p in policies) + " |")
    lines.append("| mean | " + " | ".join(f"{table[p].mean():.1f}" for p in policies) + " |")
    lines.append("| spend / budget | " + " | ".join(f"{spend[p]:.3f}" for p in policies) + " |")
    lines += ["", f"Largest overspend of any policy on any day: {results['overspend'].max():.2f}.",
              f"Posteriors fitted by the `{engine}` engine."]
    _write(_named("account", engine), lines)
