"""Benchmarks of accuracy: calibration against simulated truth, censored exports, drift, the Open Bandit log, allocation quality."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .common import (_engine_line, _header, _held_out, _named, _standard_error,
                     _write, gate_summary)
from ..pipeline import fit_cached


def bench_calibration(campaigns: int, seed: int, engine: str = "auto") -> None:
    """Fit 5 weeks, predict week 6: PIT and interval coverage, RMSE of rates vs empirical rates."""
    import pandas as pd

    from .. import cache, data, sim

    world = sim.make_world(campaigns=campaigns, seed=seed)
    history = sim.log_history(world, days=42, seed=seed + 1)
    stamps = pd.to_datetime(history["timestamp"], utc=True)
    cut = stamps.min() + pd.Timedelta(days=35)
    train, holdout = history[stamps < cut], history[stamps >= cut]
    cells = data.aggregate(data.load_windows(train))
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit_cached(cells, Path(tmp) / "m", progress=False, seed=seed, engine=engine).fit
        cal = _held_out(Path(tmp) / "m", holdout, world)
        _, arrays = cache.read_runtime(Path(tmp) / "m")
    world_cvr = world.cvr[[world.campaigns.index(c) for c in cells.campaigns]]  # the cells' order (sorted names)
    truth = world_cvr[cells.campaign, cells.dow, cells.hour]
    post = arrays["cvr"][:, :campaigns].mean(axis=0)[cells.campaign, cells.dow, cells.hour]
    emp = cells.conversions / np.maximum(cells.clicks, 1)
    d = fitted.diagnostics
    lines = _header(f"Calibration on simulated truth: {campaigns} campaigns, fit 5 weeks, predict week 6") + [
        "| measure | value | target |", "|---|---|---|",
        f"| held-out windows | {cal['windows']} | |",
        f"| 90% coverage by randomized PIT | {cal['pit_coverage']:.3f} | 0.85-0.95 |",
        f"| 90% predictive interval coverage (inclusive, discrete counts) | {cal['interval_coverage']:.3f} | "
        ">= 0.85 (conservative on small counts) |",
        f"| 90% interval coverage of the true cell rates | {cal['rate_coverage']:.3f} | about 0.90 |",
        f"| RMSE posterior-mean rate vs truth | {np.sqrt(np.mean((post - truth) ** 2)):.5f} | below empirical |",
        f"| RMSE empirical per-cell rate vs truth (baseline) | {np.sqrt(np.mean((emp - truth) ** 2)):.5f} | |",
        f"| fit: gate, seconds | {gate_summary(d)}, {fitted.seconds:.0f} s | |"]
    _write(_named("calibration", engine), lines + [_engine_line(fitted)])


DELAY_WORLDS = {  # name: (share fast, fast mean s, slow mean s) of the conversion delay
    "fast (minutes)": (1.0, 600.0, 600.0),
    "slow (hours to days)": (0.35, 3600.0, 1.5 * 86400),
    "very slow (days)": (0.2, 3600.0, 4 * 86400),
}


def bench_delay(campaigns: int = 3, seeds: tuple[int, ...] = (61, 62, 63), weeks: tuple[int, ...] = (8, 2),
                engine: str = "auto") -> None:
    """History exported while conversions are still arriving: the censored fit (``observed_until`` and a
    delay sample) against the naive fit (reported counts taken as complete) on the same windows, per delay
    world, length of history and world seed: fitted rates and the held-out week against the truth, beside
    what the complete data itself shows (its conversions over the true rates' expectation: the noise of
    that world's draw, which no fit can see past), and the mean over the seeds."""
    import pandas as pd

    from .. import cache, data, sim

    lines = _header(f"Conversion delay: {campaigns} campaigns, history exported while conversions arrive, "
                    f"world seeds {', '.join(map(str, seeds))}") + [
        "Each world's delay: a share of conversions exponential with a fast mean, the rest with a slow mean. "
        "Each history (its weeks fitted, the next held out) is exported at its end: the training windows' "
        "conversions are those reported by the export (each reported with the true "
        "probability for its window); the week after is held out complete. *censored*: the windows carry "
        "`observed_until` (the export) and the fit a delay sample of 2,000 (drawn from the world's delay: "
        "what `windows --conversion-time` estimates from an event log); *naive*: the same reported counts "
        "taken as complete. *complete / truth*: the training cells' conversions (all of them, reported or "
        "not) over their true expectation (true rate x clicks): where an unbiased fit of that world's data "
        "lands; *rate / truth*: the posterior mean rate over the training cells, click-weighted, "
        "over the true one; *held-out conv.*: predicted over actual conversions of the held-out week; *PIT 90%* and "
        "*rate 90%* as in the calibration table.", "",
        "| weeks | delay world | seed | fit | reported by export | complete / truth | rate / truth | held-out conv. | "
        "PIT 90% | rate 90% | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for seed in seeds:
        world = sim.make_world(campaigns=campaigns, seed=seed)
        world_cvr = world.cvr[[world.campaigns.index(c) for c in sorted(world.campaigns)]]
        for n_weeks, (name, spec) in ((n, w) for n in weeks for w in DELAY_WORLDS.items()):
            history = sim.log_history(world, days=7 * (n_weeks + 1), seed=seed + 1)
            stamps = pd.to_datetime(history["timestamp"], utc=True)
            export = stamps.min() + pd.Timedelta(weeks=n_weeks)  # exported at the end of the history's last week
            train, holdout = history[stamps < export].reset_index(drop=True), history[stamps >= export]
            elapsed = (export - stamps[stamps < export]).dt.total_seconds().to_numpy() / 3600
            truth_share = data.reported_share(elapsed, sim.delays(spec, 200_000, seed + 2))
            reported = np.random.default_rng(seed + 3).binomial(train["conversions"].to_numpy(), truth_share)
            windows = train.assign(conversions=reported)
            sample = sim.delays(spec, 2000, seed + 4)
            complete = data.aggregate(data.load_windows(train))
            expected = (world_cvr[complete.campaign, complete.dow, complete.hour] * complete.clicks).sum()
            runs = {"naive": (data.load_windows(windows), None),
                    "censored": (data.load_windows(windows.assign(observed_until=export.isoformat())), sample)}
            for fit_name, (loaded, delays) in runs.items():
                cells = data.aggregate(loaded, delays=delays)
                with tempfile.TemporaryDirectory() as tmp:
                    fitted = fit_cached(cells, Path(tmp) / "m", progress=False, seed=seed, conversion_delay=delays,
                                        engine=engine).fit
                    cal = _held_out(Path(tmp) / "m", holdout, world)
                    _, arrays = cache.read_runtime(Path(tmp) / "m")
                post = arrays["cvr"][:, :campaigns].mean(axis=0)[cells.campaign, cells.dow, cells.hour]
                true = world_cvr[cells.campaign, cells.dow, cells.hour]
                row = {"weeks": n_weeks, "world": name, "fit": fit_name,
                       "complete": float(complete.conversions.sum() / expected),
                       "rate": float((post * cells.clicks).sum() / (true * cells.clicks).sum()),
                       "held": cal["predicted_conversions"] / float(holdout["conversions"].sum())}
                rows.append(row)
                lines.append(f"| {n_weeks} | {name} | {seed} | {fit_name} | "
                             f"{reported.sum() / train['conversions'].sum():.1%} | {row['complete']:.3f} | "
                             f"{row['rate']:.3f} | {row['held']:.3f} | {cal['pit_coverage']:.3f} | "
                             f"{cal['rate_coverage']:.3f} | {'pass' if fitted.diagnostics.passed else 'FAIL'} |")
                print(lines[-1], flush=True)
    frame = pd.DataFrame(rows)
    lines += ["", "Mean over the seeds (*se*: the standard error of the mean rate / truth over the seeds):", "",
              "| weeks | delay world | fit | complete / truth | rate / truth | se | held-out conv. |",
              "|---|---|---|---|---|---|---|"]
    for (n_weeks, name, fit_name), group in frame.groupby(["weeks", "world", "fit"], sort=False):
        lines.append(f"| {n_weeks} | {name} | {fit_name} | {group['complete'].mean():.3f} | "
                     f"{group['rate'].mean():.3f} | {_standard_error(group['rate']):.3f} | "
                     f"{group['held'].mean():.3f} |")
    _write(_named("delay", engine), lines + [_engine_line(fitted)])


DRIFT_WORLDS = {  # name: (log-odds change per week, step in the log-odds, day of the step)
    "none": (0.0, 0.0, None),
    "slow fall": (-0.025, 0.0, None),
    "fall": (-0.05, 0.0, None),
    "rise": (0.04, 0.0, None),
    "step down in week 6": (0.0, -0.3, 38),
}


def bench_drift(campaigns: int = 3, seeds: tuple[int, ...] = (71, 72, 73), weeks: int = 7, engine: str = "auto") -> None:
    """Conversion rates that move over time: the model with drift against the one that treats every week
    alike (``ModelConfig(drift=False)``, the model before version 14), fitted on the same ``weeks`` weeks,
    forecasting the week after, in each drift world and world seed."""
    from dataclasses import replace

    import pandas as pd

    from .. import data, sim
    from ..model import DEFAULT
    from ..predict import predict

    models = {"drift": DEFAULT, "every week alike": replace(DEFAULT, drift=False)}
    lines = _header(f"Drift: {campaigns} campaigns, {weeks} weeks fitted, the next week forecast, world seeds "
                    f"{', '.join(map(str, seeds))}") + [
        "Each world's true conversion rates move by a log-odds change per week (or a step), the same for every "
        "campaign; traffic is stationary. Both models are fitted on the same windows (default settings) and "
        "forecast the held-out week after them (`predict`, each window's rate projected to its time). "
        "*rate 90%*: share of held-out windows whose true rate lies in the 90% interval of `pred_cvr`; "
        "*pred / expected*: predicted conversions over the true expected ones (true rate x clicks: what a "
        "forecast can know); *pred / actual*: over the conversions that happened; *PIT 90%*: randomized PIT "
        "of the counts in [0.05, 0.95]; *gate*: passed on the first sampling, or after the one automatic retry "
        "(`fit`'s); *fit s*: fit and cache write, warm compile cache.", "",
        "| world | seed | model | rate 90% | pred / expected | pred / actual | PIT 90% | gate | fit s |",
        "|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for seed in seeds:
        world = sim.make_world(campaigns=campaigns, seed=seed)
        for name, (per_week, step, step_day) in DRIFT_WORLDS.items():
            days = 7 * (weeks + 1)
            truth = sim.drifting_cvr(world, days, per_week, step, step_day)
            history = sim.log_history(world, days=days, seed=seed + 1, cvr=truth)
            hour_of, true_rate = sim.history_truth(world, history, truth)
            held = hour_of >= weeks * 7 * 24
            holdout = history[held].reset_index(drop=True)
            cells = data.aggregate(data.load_windows(history[~held].reset_index(drop=True)))
            for model_name, config in models.items():
                with tempfile.TemporaryDirectory() as tmp:
                    if not rows:  # compile both models' samplers first: every fit below is warm
                        for warm in models.values():
                            fit_cached(cells, Path(tmp) / "warm", progress=False, draws=20, tune=20, config=warm,
                                       overwrite=True)
                    start = time.perf_counter()
                    fitted = fit_cached(cells, Path(tmp) / "m", progress=False, seed=seed, config=config,
                                        engine=engine).fit
                    seconds = time.perf_counter() - start
                    pred, _ = predict(str(Path(tmp) / "m"), holdout, force=True)
                rate = true_rate[held]
                row = {"world": name, "seed": seed, "model": model_name,
                       "rate": float(((pred["pred_cvr_lo"] <= rate) & (rate <= pred["pred_cvr_hi"])).mean()),
                       "expected": float(pred["pred_conversions_mean"].sum() / (rate * holdout["clicks"]).sum()),
                       "actual": float(pred["pred_conversions_mean"].sum() / holdout["conversions"].sum()),
                       "pit": float(((pred["pred_pit"] >= 0.05) & (pred["pred_pit"] <= 0.95)).mean()),
                       "gate": ("FAIL" if not fitted.diagnostics.passed else
                                "pass after a retry" if fitted.settings["retried"] else "pass"),
                       "seconds": seconds}
                rows.append(row)
                lines.append(f"| {name} | {seed} | {model_name} | {row['rate']:.3f} | {row['expected']:.3f} | "
                             f"{row['actual']:.3f} | {row['pit']:.3f} | {row['gate']} | {seconds:.1f} |")
                print(lines[-1], flush=True)
    frame = pd.DataFrame(rows)
    lines += ["", "Mean over the seeds (*se*: the standard error of that mean over the world seeds: each world's "
              "training data is one random draw, so one seed's forecast carries a few % of its noise, and the mean "
              "over seeds is what estimates a systematic bias):", "",
              "| world | model | rate 90% | pred / expected | se | worst pred / expected | fit s |",
              "|---|---|---|---|---|---|---|"]
    for (name, model_name), group in frame.groupby(["world", "model"], sort=False):
        worst = group["expected"].iloc[int(np.argmax(np.abs(group["expected"] - 1)))]
        lines.append(f"| {name} | {model_name} | {group['rate'].mean():.3f} | {group['expected'].mean():.3f} | "
                     f"{_standard_error(group['expected']):.3f} | {worst:.3f} | {group['seconds'].mean():.1f} |")
    _write(_named("drift", engine), lines + [_engine_line(fitted)])


def bench_allocation(datasets: int, draws: int, seed: int = 500) -> None:
    """Over simulated datasets: plan quality vs the true optimum, and calibration of the confidence score."""
    import pandas as pd

    from .. import allocate as al
    from .. import cache, data, sim

    rows = []
    for i in range(datasets):
        world = sim.make_world(campaigns=3, seed=seed + i)
        for weeks in (1, 5):
            history = sim.log_history(world, days=7 * weeks, seed=seed + 100 + i)
            cells = data.aggregate(data.load_windows(history))
            with tempfile.TemporaryDirectory() as tmp:
                fitted = fit_cached(cells, Path(tmp) / "m", draws=draws, tune=draws, chains=4, progress=False, seed=i).fit
                manifest, arrays = cache.read_runtime(Path(tmp) / "m")
            for c, name in enumerate(manifest["campaigns"]):
                for dow in range(7):
                    _, draws_, _ = al.campaign_draws(arrays, manifest, name, dow)
                    budget = round(0.5 * float(draws_.capacity[0].sum()), 2)  # half of what the day can absorb
                    res = al.allocate_draws(draws_, budget)
                    cents = int(round(budget * 100))
                    lo, hi = al.bounds_in_cents(cents, draws_.capacity[0], 0.0, None, 0.2, 1.5)
                    true_v = world.cvr[c, dow] / world.cpc[c, dow]
                    best = al.greedy_fill(np.argsort(-true_v, kind="stable"), lo, hi, cents)
                    ratio = float(true_v @ res["cents"] / (true_v @ best))
                    rows.append({"dataset": i, "weeks": weeks, "campaign": name, "dow": dow, "ratio": ratio,
                                 "confidence": res["confidence"], "reached": ratio >= 0.95,
                                 "gate": fitted.diagnostics.passed})
            print(f"dataset {i} weeks {weeks}: mean ratio {np.mean([r['ratio'] for r in rows[-21:]]):.3f}", flush=True)
    df = pd.DataFrame(rows)
    lines = _header(f"Allocation quality and confidence calibration: {datasets} simulated worlds x 3 campaigns x "
                    f"7 days, history of 1 or 5 weeks, {draws} draws x 4 chains") + [
        "Ratio: the plan's true expected conversions over those of the plan computed from the true rates under the "
        "same constraints (budget: half of the day's posterior capacity, max share 20%, capacity x 1.5). "
        "Reached: ratio >= 0.95. A calibrated "
        "confidence score matches the reached fraction.", "",
        "| history | plans | mean ratio | 5% quantile | mean confidence | fraction reached | fits passing gate |",
        "|---|---|---|---|---|---|---|"]
    for weeks, g in df.groupby("weeks"):
        lines.append(f"| {weeks} week(s) | {len(g)} | {g['ratio'].mean():.3f} | {g['ratio'].quantile(0.05):.3f} | "
                     f"{g['confidence'].mean():.3f} | {g['reached'].mean():.3f} | "
                     f"{g.groupby('dataset')['gate'].first().mean():.0%} |")
    lines += ["", "Reliability (all plans):", "", "| stated confidence | plans | mean stated | fraction reached |",
              "|---|---|---|---|"]
    bins = pd.cut(df["confidence"], [0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0], include_lowest=True)
    for b, g in df.groupby(bins, observed=True):
        lines.append(f"| {b} | {len(g)} | {g['confidence'].mean():.3f} | {g['reached'].mean():.3f} |")
    lines.append(f"\nOverall: mean stated confidence {df['confidence'].mean():.3f}, fraction reached "
                 f"{df['reached'].mean():.3f} (gap {abs(df['confidence'].mean() - df['reached'].mean()):.3f}).")
    _write("allocation", lines)


OPEN_BANDIT = "../shared/data/open_bandit"  # where the public sample lies beside this repository; --root elsewhere


def open_bandit_windows(root: str = OPEN_BANDIT):
    """The Open Bandit sample as windows: campaigns all/men/women, both logging policies, clicks as outcome."""
    import pandas as pd

    from ..data import read_table, windows_from_events

    frames = []
    for campaign in ("all", "men", "women"):
        events = pd.concat([read_table(Path(root) / policy / campaign / f"{campaign}.csv")
                            for policy in ("random", "bts")], ignore_index=True)
        frames.append(windows_from_events(events.assign(campaign=campaign), "timestamp", "click", group="campaign",
                                          name=f"{root}/*/{campaign}"))
    return pd.concat(frames, ignore_index=True).groupby(["timestamp", "campaign"], as_index=False).sum()


def bench_open_bandit(root: str = OPEN_BANDIT, train_days: int = 6) -> None:
    """Real held-out day: 90% coverage and log predictive density of the model vs two baselines."""
    import pandas as pd
    from scipy.special import logsumexp
    from scipy.stats import binom

    from .. import cache, data
    from ..predict import predict

    windows = open_bandit_windows(root)
    stamps = pd.to_datetime(windows["timestamp"], utc=True)
    cut = stamps.min() + pd.Timedelta(days=train_days)
    train, test = windows[stamps < cut].reset_index(drop=True), windows[stamps >= cut].reset_index(drop=True)
    cells = data.aggregate(data.load_windows(train))
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit_cached(cells, Path(tmp) / "m", progress=False, seed=7).fit
        pred, _ = predict(str(Path(tmp) / "m"), test, force=True)
        manifest, arrays = cache.read_runtime(Path(tmp) / "m")
    y, n = test["conversions"].to_numpy(), test["clicks"].to_numpy()
    camp = test["campaign"].map({c: i for i, c in enumerate(manifest["campaigns"])}).to_numpy()
    dow, hour = data.local_dow_hour(pd.to_datetime(test["timestamp"], utc=True), "UTC")
    p = arrays["cvr"][:, camp, dow, hour].astype(np.float64)
    lpd_model = logsumexp(binom.logpmf(y[None, :], n[None, :], p), axis=0) - np.log(p.shape[0])
    tr_hour = pd.to_datetime(train["timestamp"], utc=True).dt.hour
    by_hour = train.groupby(tr_hour)[["conversions", "clicks"]].sum()
    p_hour = (by_hour["conversions"] / by_hour["clicks"]).reindex(range(24)).to_numpy()[hour]
    p_hour1 = ((by_hour["conversions"] + 1) / (by_hour["clicks"] + 2)).reindex(range(24)).to_numpy()[hour]
    by_camp = train.groupby("campaign")[["conversions", "clicks"]].sum()
    p_camp = ((by_camp["conversions"] + 1) / (by_camp["clicks"] + 2)).reindex(test["campaign"]).to_numpy()

    def coverage(ps):  # randomized-PIT 90% coverage of a binomial plug-in
        below, upto = binom.cdf(y - 1, n, ps), binom.cdf(y, n, ps)
        u = below + np.random.default_rng(0).uniform(size=y.size) * (upto - below)
        return float(((u >= 0.05) & (u <= 0.95)).mean())

    pit = pred["pred_pit"].to_numpy()
    d = fitted.diagnostics
    lines = _header(f"Open Bandit Dataset (real, ZOZOTOWN): fit {train_days} days, predict the last day "
                    f"({len(test)} campaign-hours, {int(y.sum())} clicks-as-conversions)") + [
        f"Training: {int(train['clicks'].sum())} impressions, {int(train['conversions'].sum())} clicks; fit gate "
        f"{gate_summary(d)}, {fitted.seconds:.0f} s. Source: Saito et al., Open Bandit Dataset, CC BY 4.0.", "",
        "| predictor | 90% coverage (randomized PIT) | log predictive density (sum) | per window |",
        "|---|---|---|---|",
        f"| hierarchical posterior (this package) | {((pit >= 0.05) & (pit <= 0.95)).mean():.3f} | "
        f"{lpd_model.sum():.2f} | {lpd_model.mean():.4f} |",
        f"| pooled hourly rate (all campaigns, per hour) | {coverage(p_hour):.3f} | "
        f"{binom.logpmf(y, n, p_hour).sum():.2f} | {binom.logpmf(y, n, p_hour).mean():.4f} |",
        f"| pooled hourly rate, add-one smoothing | {coverage(p_hour1):.3f} | "
        f"{binom.logpmf(y, n, p_hour1).sum():.2f} | {binom.logpmf(y, n, p_hour1).mean():.4f} |",
        f"| per-campaign rate, add-one smoothing | {coverage(p_camp):.3f} | "
        f"{binom.logpmf(y, n, p_camp).sum():.2f} | {binom.logpmf(y, n, p_camp).mean():.4f} |",
        "", "Higher log predictive density is better (the raw pooled hourly rate is -inf: some hours had no "
        "click in training, so it gives a held-out click probability 0). The posterior's hour curve: "
        + ", ".join(f"{h:02d}h {v:.2%}" for h, v in zip(range(0, 24, 4),
                                                       arrays["cvr"][:, :3].mean(axis=(0, 1, 2))[::4]))]
    _write("open_bandit", lines)
