"""Benchmarks: each prints a Markdown table and writes it under reports/benchmarks/; every run also
rebuilds reports/benchmarks.md, the index of all tables (machine, versions, each figure beside its
baseline from the same run).

    gaelp-bayes bench fit            # fit time, cold vs warm compile, 1/20/200 campaigns
    gaelp-bayes bench calibration    # held-out coverage and RMSE on a larger simulated case
    gaelp-bayes bench allocation     # plan quality vs truth and confidence calibration
    gaelp-bayes bench runtime        # per-bid time, batch throughput, import time, memory
    gaelp-bayes bench pacing         # policies vs a hindsight oracle, rich and sparse history
    gaelp-bayes bench scenarios      # every simulate scenario, 3 campaigns x 7 days, with/without learning
    gaelp-bayes bench robustness     # the battery of data shapes: gate pass rates, time, held-out coverage
    gaelp-bayes bench cache          # Pacer.load/allocate of one campaign out of 100 .. 10,000 (cold page cache)
    gaelp-bayes bench scale          # sharded fits on a Dask LocalCluster (1, 2 workers) beside the joint fit
    gaelp-bayes bench delay          # history exported while conversions arrive: censored vs naive fit
    gaelp-bayes bench drift          # rates that move over the weeks: the drift model vs every week alike
    gaelp-bayes bench all            # everything (make bench; needs models/demo from make demo)

(``python -m gaelp_bayes.bench ...`` is the same.)

Speed targets are checked here, never by timed assertions in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench_common import (OUT_DIR, _campaign_rates, _header, _held_out, _markdown, _standard_error, _write,
                           gate_summary, whole_numbers)
from .errors import GaelpError
from .pipeline import fit_cached

def _named(table: str, engine: str) -> str:
    """A benchmark table's name: the default engine's under its own name, another engine's beside it."""
    return table if engine == "auto" else f"{table}_{engine}"


def _engine_line(fitted) -> str:
    """What fitted the posteriors of a table (the last fit's engine)."""
    return f"\nPosteriors fitted by the {fitted.settings.get('engine', 'nuts')} engine."


_FIT_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from gaelp_bayes import data, model, sim
campaigns, sampler, data_seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
world = sim.make_world(campaigns=campaigns, seed=5)
cells = data.aggregate(data.load_windows(sim.log_history(world, days=56, seed=data_seed)))
f = model.fit(cells, engine="nuts", sampler=sampler, progress=False, seed=1)
d = f.diagnostics
print(json.dumps({"fit_s": f.seconds, "process_s": time.perf_counter() - t0, "cells": int(len(cells.clicks)),
                  "passed": d.passed, "rhat": d.rhat_max, "ess_bulk": d.ess_bulk_min, "ess_tail": d.ess_tail_min,
                  "div": d.divergences, "sampler": f.settings["sampler"], "model": model.MODEL_VERSION,
                  "nuts": "{chains} x {tune} + {draws}, {target_accept}".format(**f.settings),
                  "parts": {p: v["rhat_max"] for p, v in f.settings["part_diagnostics"].items()},
                  "failed": [p for p, v in f.settings["part_diagnostics"].items() if not v["passed"]],
                  "retried": sorted(f.settings["retried"])}))
"""


def _fit_child(campaigns: int, sampler: str, compiledir: str, data_seed: int, source: str | None = None) -> dict:
    """One fit in a fresh process with the compile cache ``compiledir``; ``source``: the folder of another
    version of the package to fit with instead (a git worktree of an earlier commit, say)."""
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={compiledir}", "NUMBA_CACHE_DIR": compiledir}
    if source:
        env["PYTHONPATH"] = str(Path(source).resolve())
    proc = subprocess.run([sys.executable, "-c", _FIT_CHILD, str(campaigns), sampler, str(data_seed)],
                          capture_output=True, text=True, env=env, cwd=source or None)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


WARM_REPEATS = 3  # warm fits per size up to 20 campaigns: a few seconds vary by 10-20% from run to run here


def _verdict(run: dict) -> str:
    """'pass' or 'FAIL', with the parts that failed and those sampled again, where a fit child says."""
    words = ["pass" if run["passed"] else "FAIL"]
    for key in ("failed", "retried"):
        if run.get(key):
            words.append(f"{key}: {', '.join(run[key])}")
    return "; ".join(words)


def bench_fit(sizes: list[int], samplers: list[str], baseline: str | None = None) -> None:
    """Fit time for each size and sampler: cold (empty compile cache), then warm: new processes refitting
    the same structure on other data (the next day's refit), with the cache the cold run left.  With
    ``baseline`` (the folder of another version of the package), that version is measured in the same run,
    each size right after this one's."""
    lines = _header("Fit speed: campaigns x 8 weeks, each version's default settings") + [
        "Each fit runs in a fresh process. *cold*: an empty compile cache. *warm*: a new process fitting "
        "other data of the same shape (another simulated 8 weeks: other counts and cells, the next refit) "
        "with the cache the cold run left. *one fewer*: then a new process fitting one campaign fewer "
        "(another account) with that cache. *NUTS*: chains x tuning steps + draws, target acceptance. "
        "`fit` is `model.fit` (imports of the samplers, compilation or cache loading, sampling, "
        "diagnostics); `process` adds Python start-up, package imports and "
        f"data preparation. Up to 20 campaigns the warm fit runs {WARM_REPEATS} times on other data each: "
        "the median (and the range). Gate figures are the median warm fit's (the cold fit's where warm was "
        "not run). *model*: the model version fitted (a baseline version, when given, runs in the same "
        "run on the same data).", "",
        "| campaigns | cells | model | sampler | NUTS | cold fit s | warm fit s | warm process s | one fewer fit s | gate | max R-hat | min bulk ESS | min tail ESS | divergences |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    reference = ["", "Reference (a plain single hierarchical model measured on this machine kind before this "
                 "project's caching: nutpie 26 s for 1 campaign, 23 s of it compiling; 77 s for 200 campaigns, "
                 "failing the R-hat/ESS gate)."]
    for n, sampler, source in ((n, sampler, source) for n in sizes for sampler in samplers
                               for source in ([None, baseline] if baseline else [None])):
        if sampler == "pymc" and n > 20:
            lines.append(f"| {n} | | | pymc | | not run: PyMC's sampler takes 1.2 ms per iteration in Python |||||||||")
            continue
        with tempfile.TemporaryDirectory() as cdir:
            cold = _fit_child(n, sampler, cdir, data_seed=6, source=source)
            # above 20 campaigns a fit takes minutes: the warm run is skipped (it saves the compile time only)
            warm_runs = [_fit_child(n, sampler, cdir, data_seed=7 + k, source=source)
                         for k in range(WARM_REPEATS if n <= 20 else 0)]
            fewer = _fit_child(n - 1, sampler, cdir, data_seed=7, source=source) if 2 < n <= 20 else None
        failed = [run["error"] for run in [cold, *warm_runs, *([fewer] if fewer else [])] if "error" in run]
        if failed:
            lines.append(f"| {n} | | {'baseline' if source else 'this'} | {sampler} | | error: {failed[0]} |||||||||")
        else:
            if warm_runs:
                warm = sorted(warm_runs, key=lambda run: run["fit_s"])[len(warm_runs) // 2]
                fit_s, process_s = ([run[key] for run in warm_runs] for key in ("fit_s", "process_s"))
                warm_fit, warm_process = (f"{np.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in (fit_s, process_s))
            else:
                warm, warm_fit, warm_process = cold, "not run", "not run"
            fewer_fit = f"{fewer['fit_s']:.1f}" if fewer else "not run"
            lines.append(f"| {n} | {warm['cells']} | {warm.get('model', '?')}{' (baseline)' if source else ''} | "
                         f"{warm['sampler']} | {warm.get('nuts', '?')} | {cold['fit_s']:.1f} | {warm_fit} | "
                         f"{warm_process} | {fewer_fit} | "
                         f"{_verdict(warm)} | {warm['rhat']:.3f} | "
                         f"{warm['ess_bulk']:.0f} | {warm['ess_tail']:.0f} | {warm['div']} |")
        print(lines[-1], flush=True)
        _write("fit_speed", lines + reference)  # after every row: a long run stopped early keeps its rows


def bench_calibration(campaigns: int, seed: int, engine: str = "auto") -> None:
    """Fit 5 weeks, predict week 6: PIT and interval coverage, RMSE of rates vs empirical rates."""
    import pandas as pd

    from . import cache, data, sim

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

    from . import cache, data, sim

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

    from . import data, sim
    from .model import DEFAULT
    from .predict import predict

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


def bench_scale(sizes: list[int], workers: list[int], joint_up_to: int, seed: int = 31,
                same_base_rate: bool = False) -> None:
    """Sharded fits of campaigns x 8 weeks on a LocalCluster of each number of ``workers``, timed warm (a
    short fit of the same structure compiles first), with held-out coverage on a 9th week of simulated
    truth; up to ``joint_up_to`` campaigns, the joint fit of the same data beside (time, coverage, and
    how far the sharded posterior means are from the joint ones).  ``same_base_rate``: every campaign's base
    conversion rate the same (a population whose campaign-level spread is zero)."""
    import pandas as pd

    from . import data, sim

    lines = _header("Sharded fits: campaigns x 8 weeks on a Dask LocalCluster") + [
        f"Each size: simulated truth (world seed {seed}"
        + (", every campaign's base conversion rate the same: no spread of campaign levels" if same_base_rate else "")
        + "), 8 weeks fitted, the 9th held out. A sharded fit "
        "(population fit of 24 campaigns, shards of 24; default NUTS settings per fit) on a LocalCluster of "
        "the given number of worker processes, the machine's cores shared among them; the compiled samplers "
        "are warm (a 10-draw sharded fit of the first 48 campaigns, the same structures, ran first). "
        "*joint*: one joint fit of the same data "
        "in this process. *population s*: the population fit; *shard s*: median (max) per shard; *wall s*: "
        "everything, cluster start included. *PIT 90%*: randomized-PIT 90% coverage of held-out conversions "
        "per window; *rate 90%*: 90% intervals covering the true cell rates. *vs joint*: each campaign's "
        "rate averaged over its cells, sharded posterior mean minus joint, in joint posterior sds "
        "(median |z|, max |z|) and relative (median, max). *point population*: the shards conditioned on "
        "the population fit's posterior mean instead of its posterior.", "",
        "| campaigns | fit | workers | shards | population s | shard s | wall s | gate | max R-hat | min bulk ESS | "
        "PIT 90% | rate 90% | vs joint (sd) | vs joint (relative) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for n in sizes:
        world = sim.make_world(campaigns=n, seed=seed, **({"base_cvr": (0.03, 0.03)} if same_base_rate else {}))
        history = sim.log_history(world, days=63, seed=seed + 1)
        stamps = pd.to_datetime(history["timestamp"], utc=True)
        cut = stamps.min() + pd.Timedelta(days=56)
        cells = data.aggregate(data.load_windows(history[stamps < cut]))
        holdout = history[stamps >= cut]
        with tempfile.TemporaryDirectory() as tmp:
            from .model import config, sharded  # the structures compiled: a population fit and one shard

            warm = sharded.subset(cells, list(range(min(n, config.POPULATION_SIZE + config.SHARD_SIZE))))
            fit_cached(warm, Path(tmp) / "warm", sharding={"workers": max(workers)}, draws=10, tune=10,
                       progress=False, seed=seed)
            runs = []
            if n <= joint_up_to:
                start = time.perf_counter()
                fitted = fit_cached(cells, Path(tmp) / "joint", progress=False, seed=seed).fit
                runs.append(("joint", 1, Path(tmp) / "joint", fitted, time.perf_counter() - start))
            for w in workers:
                start = time.perf_counter()
                fitted = fit_cached(cells, Path(tmp) / f"sharded_{w}", sharding={"workers": w}, progress=False,
                                    seed=seed).fit
                runs.append(("sharded", w, Path(tmp) / f"sharded_{w}", fitted, time.perf_counter() - start))
            if n <= joint_up_to:  # what carrying the population's uncertainty into the shards is worth
                start = time.perf_counter()
                point = {"workers": max(workers), "point_population": True}
                fitted = fit_cached(cells, Path(tmp) / "point", sharding=point, progress=False, seed=seed).fit
                runs.append(("sharded, point population", max(workers), Path(tmp) / "point", fitted,
                             time.perf_counter() - start))
            joint_rates = _campaign_rates(runs[0][2]) if runs[0][0] == "joint" else None
            for kind, w, path, fitted, wall in runs:
                d, cal = fitted.diagnostics, _held_out(path, holdout, world)
                shards = population = shard_s = "-"
                if kind.startswith("sharded"):
                    seconds = fitted.settings["sharded"]["seconds"]
                    shards, population = str(len(seconds) - 1), f"{seconds[0]:.0f}"
                    shard_s = f"{np.median(seconds[1:]):.0f} ({max(seconds[1:]):.0f})" if len(seconds) > 1 else "-"
                versus = ("-", "-")
                if kind.startswith("sharded") and joint_rates is not None:
                    rates = _campaign_rates(path)
                    diff = rates.mean(axis=0) - joint_rates.mean(axis=0)
                    z, rel = np.abs(diff / joint_rates.std(axis=0)), np.abs(diff / joint_rates.mean(axis=0))
                    versus = (f"{np.median(z):.2f}, {z.max():.2f}", f"{np.median(rel):.1%}, {rel.max():.1%}")
                lines.append(f"| {n} | {kind} | {w} | {shards} | {population} | {shard_s} | {wall:.0f} | "
                             f"{'pass' if d.passed else 'FAIL'} | {d.rhat_max:.3f} | {d.ess_bulk_min:.0f} | "
                             f"{cal['pit_coverage']:.3f} | {cal['rate_coverage']:.3f} | {versus[0]} | {versus[1]} |")
                print(lines[-1], flush=True)
            walls = {w: wall for kind, w, _, _, wall in runs if kind == "sharded"}
            if 1 in walls and 2 in walls:
                notes.append(f"- {n} campaigns: parallel efficiency from 1 to 2 workers (wall 1 / (2 x wall 2)) "
                             f"{walls[1] / (2 * walls[2]):.0%}.")
        _write("scale", lines + [""] + notes)


ALLOWED_CORE_S = 2 * 600 / 2000  # core-seconds per campaign that 2,000 campaigns in 10 minutes on 2 cores allow


def _shard_floor(rows: list[dict]) -> str:
    """The cheapest sampling that passed the gate, and the cheapest of all, against ``ALLOWED_CORE_S``."""
    passed = [r["core-s per campaign"] for r in rows if r["gate"] == "pass"]
    cheapest = min(r["core-s per campaign"] for r in rows)
    text = (f"The cheapest sampling here that passed the gate cost {min(passed):.2f} core-seconds per campaign "
            f"({min(passed) / ALLOWED_CORE_S:.1f}x that)" if passed else "No sampling here passed the gate")
    return text + (f"; the cheapest of all (failing) {cheapest:.2f} ({cheapest / ALLOWED_CORE_S:.1f}x), before "
                   "the population fit and the other parts.")


def bench_shard_cost(seed: int = 31) -> None:
    """What one shard of a sharded fit costs, and why: the conversion part of a shard of ``SHARD_SIZE``
    campaigns x 8 weeks under its population prior (the part that takes nearly all of a shard's time),
    sampled on one core at several numbers of draws and one lower ``target_accept``: seconds, leapfrog steps
    per iteration, the gate's figures; and the log density's gradient timed alone, with and without the
    drift terms.  From these, the core-seconds per campaign against what ``bench scale``'s targets allow."""
    from dataclasses import replace

    import pandas as pd

    from . import data, nuts, sim
    from .model import DEFAULT, config, fitting, sharded
    from .model.conversion import PopulationPrior
    from .model.gate import diagnose
    from .model.parts import build_model, padded

    world = sim.make_world(campaigns=2 * config.SHARD_SIZE, seed=seed)
    history = sim.log_history(world, days=56, seed=seed + 1)
    cells = data.aggregate(data.load_windows(history))
    population, first = sharded.plan(cells, config.POPULATION_SIZE, config.SHARD_SIZE)[:2]
    start = time.perf_counter()
    fitted = fitting.fit(sharded.subset(cells, population), progress=False, seed=seed)
    population_s = time.perf_counter() - start
    prior = PopulationPrior.from_posterior(fitted.tree["posterior"].to_dataset())
    shard = padded(sharded.subset(cells, first), config.SHARD_SIZE)
    gradients, models = {}, {}
    for label, cfg in (("with drift (the default)", DEFAULT), ("without drift", replace(DEFAULT, drift=False))):
        built = models[label] = build_model(shard, "conversion", cfg, prior)
        logp = built.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
        logp.set_extra_values({})  # the model has no extra (non-sampled) variables
        point = np.concatenate([np.ravel(v) for v in built.initial_point().values()])
        for _ in range(20):
            logp(point)
        begin = time.perf_counter()
        for _ in range(1000):
            logp(point)
        gradients[label] = (time.perf_counter() - begin)  # ms per call: seconds per 1,000 calls
    model = models["with drift (the default)"]
    nuts.compile_model(model)
    rows = []
    for draws, target_accept, chain_seed in ((250, 0.9, 1), (500, 0.9, 1), (500, 0.9, 2), (1000, 0.9, 1),
                                             (1000, 0.7, 1)):
        begin = time.perf_counter()
        tree = nuts.sample(model, draws=draws, tune=config.TUNE, chains=config.CHAINS, seed=seed + chain_seed,
                           target_accept=target_accept, cores=1, progress=False)
        seconds = time.perf_counter() - begin
        d = diagnose(fitting.real_campaigns(tree, shard), (), DEFAULT.gate)
        steps = float(tree["sample_stats"].to_dataset()["n_steps"].mean())
        iterations = config.CHAINS * (config.TUNE + draws)
        rows.append({"draws per chain": draws, "target_accept": target_accept, "seed": chain_seed,
                     "seconds (1 core)": round(seconds, 1), "leapfrog steps per iteration": round(steps, 1),
                     "ms per gradient (from the sampling)": round(1e3 * seconds / (iterations * steps), 2),
                     "max R-hat": round(d.rhat_max, 4), "min bulk ESS": round(d.ess_bulk_min),
                     "min tail ESS": round(d.ess_tail_min), "divergences": d.divergences,
                     "gate": "pass" if d.passed else "FAIL",
                     "core-s per campaign": round(seconds / config.SHARD_SIZE, 2)})
        print(rows[-1], flush=True)
    lines = _header(f"What a shard costs: {config.SHARD_SIZE} campaigns x 8 weeks, conversion part, one core "
                    f"(world seed {seed})") + [
        f"The first shard of a sharded fit of {2 * config.SHARD_SIZE} simulated campaigns (`bench scale`'s world), "
        f"under the population prior of its population fit ({population_s:.0f} s on every core), "
        f"{config.CHAINS} chains x {config.TUNE} tuning steps + the draws shown, nutpie on one core (as a "
        "LocalCluster worker of one core runs it); a shard's other parts (volume, cost, revenue) are not timed "
        "here.", "",
        "Log density and gradient of this shard's model, timed alone (numba, 1,000 calls): " +
        "; ".join(f"{label} {ms:.3f} ms" for label, ms in gradients.items()) + ".", "",
        _markdown(pd.DataFrame(rows).set_index("draws per chain")), "",
        "Targets of `bench scale` on this 2-core machine: 2,000 campaigns in 10 minutes and 200 in 60 s each "
        f"allow at most {ALLOWED_CORE_S:.1f} core-seconds per campaign, the population fit, writing the cache and "
        "the cluster included. " + _shard_floor(rows)]
    _write("shard_cost", lines)


_READ_ONE = """
import json, os, sys, tempfile, time
from pathlib import Path
path, campaign, layout = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for file in path.rglob("*"):  # a cold read: this cache's pages dropped from the page cache
    if file.is_file():
        fd = os.open(file, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
import numpy as np
from gaelp_bayes import cache
from gaelp_bayes.runtime import Pacer
def kb(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from here
rss = kb("VmRSS:")
start = time.perf_counter()
if layout == "schema 1":  # what reading a schema-1 cache took: sha256 of runtime.npz, then every array
    cache._sha256(path / "runtime.npz")
    with np.load(path / "runtime.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    out = {"load_ms": 1000 * (time.perf_counter() - start)}
else:
    pacer = Pacer.load(path, 100.0, campaign=campaign, journal=tempfile.mkdtemp(), strict=True)
    out = {"load_ms": 1000 * (time.perf_counter() - start)}
    start = time.perf_counter()
    Pacer.load(path, 100.0, campaign=campaign, journal=tempfile.mkdtemp(), strict=True)
    out["warm_ms"] = 1000 * (time.perf_counter() - start)
    from gaelp_bayes.allocate import allocate
    start = time.perf_counter()
    allocate(str(path), 100.0, campaign=campaign, date="2026-03-02")
    out["allocate_ms"] = 1000 * (time.perf_counter() - start)
out["rss_mb"] = (kb("VmHWM:") - rss) / 1024
print(json.dumps(out))
"""


def bench_cache(sizes: list[int], draws: int = 1000, seed: int = 31) -> None:
    """Pacer.load (and allocate) on caches of many campaigns: time with a cold page cache, and the memory it
    adds, in a fresh process each; beside the schema-1 layout's whole-file read up to 1,000 campaigns."""
    from . import cache, data, sim

    world = sim.make_world(campaigns=3, seed=seed)
    cells = data.aggregate(data.load_windows(sim.log_history(world, days=28, seed=seed + 1)))
    lines = _header("Cache reads at scale: one campaign out of many") + [
        f"A real fit of 3 simulated campaigns x 4 weeks (world seed {seed}, {draws} runtime draws) is written "
        "as a cache of N campaigns (each campaign's draws a copy of one fitted campaign's; the manifest, "
        "digests and layout as a fit of N campaigns writes them). Each row runs in a fresh process with the "
        "cache's pages dropped from the page cache first (posix_fadvise DONTNEED): *load ms* is "
        "`Pacer.load(..., strict=True)` of one campaign (manifest, its digest check, its draws, the checks "
        "of every number), *warm ms* a second load in the same process, *allocate ms* `allocate` for that "
        "campaign, *added RSS MB* the process's peak resident memory (VmHWM, reset after the imports) beyond "
        "what it held after the imports. "
        "*schema 1*: the previous layout's read (sha256 of the one `runtime.npz`, then every array loaded: "
        "what `Pacer.load` did before this layout), up to 1,000 campaigns (10,000 would need 20 GB of RAM).",
        "", "| campaigns | runtime files GB | layout | load ms | warm ms | allocate ms | added RSS MB |",
        "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        base = fit_cached(cells, Path(tmp) / "base", progress=False, seed=seed, runtime_draws=draws)
        _, fitted = cache.read_runtime(base.path)
        fitted = {key: np.array(a) for key, a in fitted.items()}  # [draw, 4, ...]: 3 campaigns + a new one
        for n in sizes:
            path = Path(tmp) / f"c{n}"
            path.mkdir()
            (path / cache.POSTERIOR).symlink_to(base.path / cache.POSTERIOR)

            def blocks(step: int = 250):
                for first in range(0, n + 1, step):
                    slots = list(range(first, min(first + step, n + 1)))
                    source = [3 if s == n else s % 3 for s in slots]
                    yield slots, {key: a[:, source] for key, a in fitted.items()}

            shapes = cache.write_runtime(path, blocks(), n + 1)
            manifest = {**base.manifest, "campaigns": [f"campaign_{i:05d}" for i in range(n)],
                        "runtime_arrays": shapes,
                        "files": {**base.manifest["files"], cache.DIGESTS: cache._sha256(path / cache.DIGESTS)}}
            cache.write_manifest(path, manifest)
            size = sum(f.stat().st_size for f in (path / cache.RUNTIME).iterdir()) / 1e9
            layouts = ["schema 2"]
            if n <= 1000:
                _, arrays = cache.read_runtime(path)
                np.savez(path / "runtime.npz", campaigns=np.array(manifest["campaigns"]), **arrays)
                layouts.append("schema 1")
            for layout in layouts:
                run = subprocess.run([sys.executable, "-c", _READ_ONE, str(path), f"campaign_{n // 2:05d}", layout],
                                     capture_output=True, text=True)
                if run.returncode:
                    raise GaelpError(f"bench cache: the reading process failed: {run.stderr.strip()[-500:]}")
                r = json.loads(run.stdout.strip().splitlines()[-1])
                cell = lambda key: f"{r[key]:.1f}" if key in r else "-"  # noqa: E731
                lines.append(f"| {n:,} | {size:.2f} | {layout} | {r['load_ms']:.1f} | {cell('warm_ms')} | "
                             f"{cell('allocate_ms')} | {r['rss_mb']:.0f} |")
                print(lines[-1], flush=True)
            shutil.rmtree(path)
    _write("cache", lines)


def bench_runtime(model_dir: str, campaign: str | None, n: int = 200_000) -> None:
    """Per-bid adjust_bid time vs a no-op call, record time, batch throughput, import time, memory."""
    import resource

    code = "import time; t = time.perf_counter(); import gaelp_bayes.runtime; print(time.perf_counter() - t)"
    imports = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
               for _ in range(3)]
    from . import fleet
    from .runtime import AUCTION_TIMEOUT, CHECK_EVERY, FLUSH_EVERY, MAX_AUCTION_TIMEOUT, SYNC_EVERY, Pacer

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if campaign is None:
        campaign = json.loads((Path(model_dir) / "manifest.json").read_text())["campaigns"][0]

    class FullPathPacer(Pacer):
        """Every bid takes adjust_bid's full path: the quick window never opens."""

        def _open_quick_window(self, h: int, limit: float, scale: float) -> None:
            pass

    def load(kind: type = Pacer, **kwargs) -> Pacer:  # strict: a stopped pacer would time its early return
        kwargs.setdefault("journal", tempfile.mkdtemp())
        return kind.load(model_dir, daily_budget=1e9, campaign=campaign, force=True, strict=True, **kwargs)

    pacer = load()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import datetime as _dt

    now = _dt.datetime.combine(pacer.date, _dt.time(14), pacer.tz).timestamp()

    def noop(bid, now=None):
        return bid

    def stream(fn, start: float, calls: int, raw: float) -> float:
        """us per call of ``fn`` on 10,000 opportunities a second from ``start``, none recorded: each placed
        bid expires after the auction timeout, and after MAX_AUCTION_TIMEOUT teaches the market a loss."""
        begin = time.perf_counter()
        for i in range(calls):
            fn(raw, start + i * 1e-4)
        return (time.perf_counter() - begin) / calls * 1e6

    warm = round((MAX_AUCTION_TIMEOUT + 10) * 1e4)  # calls before the timed runs

    def placed(bidding: Pacer, raw: float = 2e-5) -> float:
        """Best of 3 runs of 20 s of the stream, after MAX_AUCTION_TIMEOUT + 10 s of it: in the steady state,
        where every bid also pays its share of both expiries."""
        stream(bidding.adjust_bid, now, warm, raw)
        return min(stream(bidding.adjust_bid, now + (warm + i * n) * 1e-4, n, raw) for i in range(3))

    base = min(stream(noop, now, n, 1.0) for _ in range(3))
    # a raw bid of 2e-5 on a budget of 1e9 asks for about 0.014, which no cap binds: the common case (the
    # plan is capped by the market's volume; the bids in flight, 0.5 s of them, hold about 70).  A raw bid
    # of 1.0 asks for about 700: the per-bid cap (10% of the hour's allocation) clamps it, on the full path;
    # whether the hour's room then binds depends on the plan (a budget no multiplier can spend leaves the
    # hour all the room: every capped bid is placed).
    # Each its own pacer: the records timed below must not meet the 1,000,000s of bids they hold
    per_bid = placed(load())
    capping = load()
    capped = placed(capping, 1.0)
    then = now + (warm + 3 * n) * 1e-4
    capped_share = sum(capping.adjust_bid(1.0, then + i * 1e-4) > 0 for i in range(10_000)) / 10_000
    full_path = placed(load(FullPathPacer))
    ledgers = []  # (store, us per placed bid, store operations per 1,000 bids)
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("SQLite", f"sqlite:///{tmp}/ledger.db", None)]
        if fleet.redis_server_path():
            server = fleet.RedisServer(Path(tmp) / "redis").start()
            stores.insert(0, ("Redis", server.url, server))
        for label, url, server in stores:
            bidding = load(ledger=url, journal=None)
            operations = bidding._ledger.operations
            us = placed(bidding)
            ledgers.append((label, us, 1000 * (bidding._ledger.operations - operations) / (warm + 3 * n)))
            bidding.close(now + 1000)
            if server is not None:
                server.stop()
    start = time.perf_counter()
    for i in range(n // 10):
        pacer.record(0.0, now=now + i * 1e-3)
    per_record = (time.perf_counter() - start) / (n // 10) * 1e6
    for i in range(200):  # some clicks and conversions so the learning step has data
        pacer.record(0.5, clicks=1, conversions=int(i % 20 == 0), now=now + 1000 + i)
    learn_ms = _median_ms(lambda: pacer._learn(now + 2000, replan=False), 20)
    replan_ms = _median_ms(lambda: pacer._maybe_replan(14), 10)
    def batches(size: int, every: float, raw: float = 2e-5) -> tuple[float, float]:
        """Bids a second through ``adjust_bids``, batches of ``size`` every ``every`` s of the clock after 20 s
        of them, and the share placed: at raw 2e-5 each bid asks for about 0.014, placed as asked."""
        bidding, batch, count = load(), np.full(size, raw), round(20 / every)
        for i in range(count):
            bidding.adjust_bids(batch, now=now + i * every)
        start, placed = time.perf_counter(), 0
        for i in range(count, 2 * count):
            placed += int(np.count_nonzero(bidding.adjust_bids(batch, now=now + i * every)))
        seconds = time.perf_counter() - start
        return count * size / seconds, placed / (count * size)

    placed_batches = [(size, every, *batches(size, every)) for size, every in ((1_000, 0.1), (10_000, 1.0))]
    batch = np.full(1_000_000, 1e-6)  # below a cent each: all refused
    start = time.perf_counter()
    for _ in range(5):
        pacer.adjust_bids(batch, now=now)
    refused_rate = 5 * batch.size / (time.perf_counter() - start)
    lines = _header("Runtime pacer speed") + [
        "| measure | value | baseline in the same run |", "|---|---|---|",
        f"| adjust_bid per call, bid placed as asked | {per_bid:.2f} us | no-op Python call {base:.2f} us "
        f"(ratio {per_bid / base:.1f}x) |",
        f"| adjust_bid per call, bids beyond the per-bid cap ({100 * capped_share:.0f}% placed, at the cap) | "
        f"{capped:.2f} us | "
        f"ratio {capped / base:.1f}x |",
        f"| adjust_bid per call, bid placed as asked by the full path (quick window kept shut) | {full_path:.2f} us "
        f"| ratio {full_path / base:.1f}x |"] + [
        f"| adjust_bid per call, bid placed as asked, {label} ledger | {us:.2f} us | ratio {us / base:.1f}x; "
        f"{ops:.3f} store operations per 1,000 bids |" for label, us, ops in ledgers] + [
        f"| record per call (journal on, no learning check) | {per_record:.2f} us | |",
        f"| learning check (importance weights + today's deviation), every {CHECK_EVERY} records | "
        f"{learn_ms:.2f} ms | amortized {1000 * learn_ms / CHECK_EVERY:.1f} us per record |",
        f"| re-plan of the rest of the day (on hour changes) | {replan_ms:.1f} ms | once an hour |",
        *(f"| adjust_bids batch throughput, batches of {size:,} every {every:g} s of the clock | "
          f"{rate / 1e6:.1f} M bids/s | {100 * share:.1f}% placed (as asked) |"
          for size, every, rate, share in placed_batches),
        f"| adjust_bids batch throughput, a batch of {batch.size:,} bids below a cent (all refused) | "
        f"{refused_rate / 1e6:.1f} M bids/s | |",
        f"| import gaelp_bayes.runtime (fresh process, incl. numpy) | {min(imports) * 1000:.0f} ms | |",
        f"| resident memory added by a loaded pacer | {(rss1 - rss0) / 1024:.1f} MB (peak RSS delta) | "
        f"{pacer.posterior.cvr.shape[0]} draws |"]
    group, window, commits = _journal_commit(pacer.posterior, durable=False)
    _, paced_window, paced_commits = _journal_commit(pacer.posterior, durable=False, rate=10_000)
    durable = _journal_commit(pacer.posterior, durable=True)[0]
    lines += [f"| record with its journal line, group commit (default) | {group:.2f} us | every record fsynced "
              f"before it returns (durable=True): {durable:.2f} us ({durable / group:.0f}x) |",
              f"| journal loss window (record returned -> its group's fsync done), max over {paced_commits} commits, "
              f"10,000 records a second | {paced_window:.1f} ms | commit every {1000 * FLUSH_EVERY:.0f} ms |",
              f"| the same, one thread recording without a pause ({1e6 / group:,.0f} a second), max over "
              f"{commits} commits | {window:.1f} ms | the thread holds Python's GIL: the commit thread waits |",
              "", "The adjust_bid rows: a stream of 10,000 opportunities a second on the clock (`now` advancing "
              "0.1 ms a call), none recorded, timed after the first "
              f"{MAX_AUCTION_TIMEOUT + 10:.0f} s of it: every timed bid also pays its share of both expiries (out "
              f"of flight after the {AUCTION_TIMEOUT:g} s auction timeout; after MAX_AUCTION_TIMEOUT, a loss taught "
              "to the market belief). The no-op call runs in the same loop. With a ledger, the pacer syncs its "
              f"lease every {SYNC_EVERY:g} s of its clock (runtime.SYNC_EVERY), in the time measured."]
    _write("runtime_speed", lines)


def _journal_commit(posterior, durable: bool, seconds: float = 2.0,
                    rate: float | None = None) -> tuple[float, float, int]:
    """Record cost (us) with the journal on, and for group commit the loss window: the longest time (ms)
    from a record's return to the end of the fsync that covers it, and the number of commits.  Records as
    fast as they go, or ``rate`` per second."""
    from .runtime import Pacer

    with tempfile.TemporaryDirectory() as tmp:
        pacer = Pacer(posterior, 1e9, journal=tmp, now=1_772_409_600.0 + 14 * 3600, durable=durable)
        commits, returned = [], []  # (records written before the commit began, its end); each record's return
        commit = pacer._commit

        def timed_commit():
            before = len(returned)
            commit()
            commits.append((before, time.perf_counter()))

        pacer._commit = timed_commit
        now, start = 1_772_409_600.0 + 14 * 3600, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pacer.record(0.0, now=now)
            returned.append(time.perf_counter())
            if rate is not None:  # wait for the next record's slot, as a bidder waits for its exchange
                wait = start + len(returned) / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
        per_record = 1e6 * (returned[-1] - start) / len(returned)
        pacer.close()
    windows, k = [], 0
    for i, t in enumerate(returned):
        while k < len(commits) and commits[k][0] <= i:  # a commit that began before record i was written
            k += 1
        if k < len(commits):
            windows.append(commits[k][1] - t)
    return per_record, 1000 * max(windows, default=0.0), len(commits)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def bench_allocation_speed(model_dir: str = "models/demo", campaign: str = "campaign_01") -> None:
    """Time one allocation with its scores from the cached draws (median of repeats)."""
    from . import allocate as al
    from . import cache

    manifest, arrays = cache.read_runtime(model_dir)
    _, draws, _ = al.campaign_draws(arrays, manifest, campaign, 0)

    lines = _header(f"Allocation speed ({draws.cvr.shape[0]} draws x 24 hours)") + [
        "| operation | median ms | aim |", "|---|---|---|",
        f"| plan + confidence + all scores (allocate_draws) | {_median_ms(lambda: al.allocate_draws(draws, 100), 30):.1f} | < 50 |",
        f"| risk-averse CVaR plan (HiGHS LP) + scores | {_median_ms(lambda: al.allocate_draws(draws, 100, risk='cvar'), 5):.1f} | |",
        f"| with a 10% exploration reserve | {_median_ms(lambda: al.allocate_draws(draws, 100, exploration=0.1), 30):.1f} | |",
        f"| allocate() from the cache (read, sha256-verify, slice, plan) | "
        f"{_median_ms(lambda: al.allocate(model_dir, 100, campaign=campaign, date='2026-03-02'), 5):.1f} | |"]
    _write("allocation_speed", lines)


def bench_allocation(datasets: int, draws: int, seed: int = 500) -> None:
    """Over simulated datasets: plan quality vs the true optimum, and calibration of the confidence score."""
    import pandas as pd

    from . import allocate as al
    from . import cache, data, sim

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

    from .data import read_table, windows_from_events

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

    from . import cache, data
    from .predict import predict

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


def bench_events(rows: int = 1_000_000) -> None:
    """`windows` on a raw log of ``rows`` events, and fit time for 10% of the rows vs all of them."""
    import pandas as pd

    from . import data, model
    from .data import read_table, windows_from_events

    rng = np.random.default_rng(0)
    t0 = pd.Timestamp("2026-01-05", tz="UTC").value // 10**9
    hours = rng.integers(0, 28 * 24, rows)
    rate = 0.02 * (1 + 0.5 * np.sin(2 * np.pi * (hours % 24) / 24))
    events = pd.DataFrame({"time": pd.to_datetime(t0 + hours * 3600 + rng.integers(0, 3600, rows), unit="s",
                                                  utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "outcome": (rng.uniform(size=rows) < rate).astype(int),
                           "campaign": rng.choice(["a", "b", "c"], rows), "cost": rng.gamma(4, 0.25, rows).round(4)})
    lines = _header(f"Raw event logs: aggregation and fit cost ({rows:,} events, 3 campaigns, 4 weeks)") + [
        "| events | read CSV s | windows s | windows | cells | fit s (500 tune + 500 draws x 2 chains) |",
        "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for n in (rows // 10, rows):
            path = Path(tmp) / f"events_{n}.csv"
            events.iloc[:n].to_csv(path, index=False)
            t = time.perf_counter()
            frame = read_table(path)
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            windows = windows_from_events(frame, "time", "outcome", group="campaign", cost="cost")
            t_win = time.perf_counter() - t
            cells = data.aggregate(data.load_windows(windows))
            fitted = model.fit(cells, draws=500, tune=500, chains=2, progress=False)
            lines.append(f"| {n:,} | {t_read:.2f} | {t_win:.2f} | {len(windows)} | {len(cells.clicks)} | "
                         f"{fitted.seconds:.1f} |")
            print(lines[-1], flush=True)
    lines += ["", "The likelihood sees only the cells (campaign x day-of-week x hour sums), so ten times the rows "
              "costs the fit nothing once aggregated; the second fit also reuses the compiled model."]
    _write("events", lines)


def bench_sparse(campaigns: int = 30, days: int = 3, seed: int = 3) -> None:
    """Many campaigns with few events, base rates 0.01%-50%, a few days, no spend: default fit settings."""
    import pandas as pd

    from . import data, model

    rng = np.random.default_rng(seed)
    base = np.exp(rng.uniform(np.log(1e-4), np.log(0.5), campaigns))
    stamps = pd.date_range("2026-01-05", periods=days * 24, freq="h", tz="UTC")
    frames = []
    for c in range(campaigns):
        n = rng.poisson(rng.uniform(0.5, 20), len(stamps))
        p = np.clip(base[c] * np.exp(0.3 * np.sin(2 * np.pi * stamps.hour / 24)), 0, 0.95)
        frames.append(pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), "campaign": f"c{c:02d}",
                                    "clicks": n, "conversions": rng.binomial(n, p)}))
    windows = pd.concat(frames, ignore_index=True)
    cells = data.aggregate(data.load_windows(windows))
    fitted = model.fit(cells, progress=False, seed=seed)
    level = fitted.tree["posterior"].to_dataset()["campaign_level"].values.reshape(-1, campaigns).mean(axis=0)
    d = fitted.diagnostics
    lines = _header(f"Sparse data: {campaigns} campaigns, {days} days, no spend, default fit settings") + [
        "| measure | value |", "|---|---|",
        f"| windows / clicks / conversions | {len(windows)} / {windows['clicks'].sum()} / {windows['conversions'].sum()} |",
        f"| cells with zero conversions | {(cells.conversions == 0).mean():.0%} |",
        f"| true base rates | {base.min():.4%} to {base.max():.1%} |",
        f"| gate | {gate_summary(d)} |",
        f"| parts sampled again (NUTS's one automatic retry) | {', '.join(fitted.settings['retried']) or 'none'} |",
        f"| correlation of posterior-mean log rate with true log base rate | "
        f"{np.corrcoef(-np.log1p(np.exp(-level)), np.log(base))[0, 1]:.3f} |",
        f"| fit seconds ({fitted.settings['sampler']}) | {fitted.seconds:.0f} |"]
    _write("sparse", lines)


ROBUSTNESS_SEEDS = (101, 202, 303)  # never used to choose anything in the model
SLOW_SHAPES = ("campaigns_200", "days_365", "campaigns_20")  # minutes per fit: one seed unless asked


def bench_robustness(shapes: list[str], seeds: list[int], slow_seeds: int = 1, baseline: str | None = None) -> None:
    """Every battery shape (battery.py) over ``seeds``, default fit settings: the gate on the first sampling
    and after the automatic retries, seconds, held-out coverage and accuracy.  Each run is appended to
    reports/benchmarks/robustness_runs.jsonl as it finishes; ``baseline`` (such a file from another version,
    run on this machine) adds that version's figures beside each shape."""
    import pandas as pd

    from . import battery

    unknown = sorted(set(shapes) - set(battery.SHAPES))
    if unknown:
        raise GaelpError(f"unknown battery shape(s): {', '.join(unknown)} (known: {', '.join(battery.SHAPES)})")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    runs_path = OUT_DIR / "robustness_runs.jsonl"
    runs = []
    with runs_path.open("w") as log:
        for name in shapes:
            for seed in seeds[:slow_seeds] if name in SLOW_SHAPES else seeds:
                drawn = battery.draw(battery.SHAPES[name], seed)
                try:
                    run = battery.evaluate(drawn, seed=seed)
                except GaelpError as exc:
                    run = {"error": str(exc).splitlines()[0], "first_pass": False, "passed": False}
                run.update(shape=name, seed=seed)
                runs.append(run)
                log.write(json.dumps(run) + "\n")
                log.flush()
                print(json.dumps(run), flush=True)
    table = _robustness_table(pd.DataFrame(runs))
    if baseline:
        before = _robustness_table(pd.read_json(baseline, lines=True))
        table = table.merge(before[["first pass", "pass", "median s", "coverage"]], how="left", left_index=True,
                            right_index=True, suffixes=("", " (baseline)"))
    first, passed = sum(run["first_pass"] for run in runs), sum(run["passed"] for run in runs)
    lines = _header("Robustness battery: ordinary data shapes nobody tuned the model on (default fit settings)") + [
        "Shapes: gaelp_bayes/battery.py (each changes one thing about 3 campaigns x 4 weeks; truth from a family "
        f"that is not the model's). Seeds {', '.join(map(str, seeds))} ({slow_seeds} for {', '.join(SLOW_SHAPES)}). "
        "*first pass*: every part passed the gate on its first sampling; *pass*: after the automatic retry. "
        "*coverage*: share of held-out windows whose randomized PIT lies in [0.05, 0.95] (0.90 when calibrated). "
        "*RMSE ratio*: click-weighted RMSE of posterior-mean cell rates against the truth, over the raw per-cell "
        "rates' (below 1: the model beats raw rates). Runs: robustness_runs.jsonl.", "",
        f"First pass {first}/{len(runs)} ({first / len(runs):.0%}), pass after retry "
        f"{passed}/{len(runs)} ({passed / len(runs):.0%})."
        + (f" Baseline columns: the runs in {baseline}." if baseline else ""), "", _markdown(table)]
    _write("robustness", lines)


def _robustness_table(runs):
    """One row per shape: pass counts, median seconds, mean coverage, RMSE ratio, the first failure."""
    import pandas as pd

    rows = {}
    for name, group in runs.groupby("shape", sort=False):
        ok = group[group["error"].isna()] if "error" in group else group
        failure = next((f[0] for f in ok.get("failures", []) if f), None) if len(ok) else None
        errors = group["error"].dropna().tolist() if "error" in group else []
        rows[name] = {"first pass": f"{int(group['first_pass'].sum())}/{len(group)}",
                      "pass": f"{int(group['passed'].sum())}/{len(group)}",
                      "median s": round(float(ok["seconds"].median()), 1) if len(ok) else float("nan"),
                      "coverage": round(float(ok["pit_coverage"].mean()), 3) if len(ok) else float("nan"),
                      "RMSE ratio": round(float((ok["rmse_posterior"] / ok["rmse_raw"]).mean()), 2) if len(ok) else float("nan"),
                      "zero cells": f"{float(ok['zero_cells'].mean()):.0%}" if len(ok) else "",
                      "a failure": (errors[0] if errors else failure) or ""}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "shape"
    return table


REGIMES = {  # name: (history days, base conversion rate range, traffic scale, world seed)
    "rich": (35, (0.01, 0.08), 10.0, 41),
    "sparse": (6, (0.008, 0.012), 10.0, 42),
}


def bench_pacing(regimes: list[str], draws: int = 1000, bid_caps: tuple[float, ...] = (0.10, 1.0),
                 engine: str = "auto") -> None:
    """Conversions as % of the hindsight oracle per policy, per history regime (fit on history, pace 7 test days)."""
    import pandas as pd

    from . import data, sim

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


FROZEN_SECONDS = 20.0  # the frozen-store measurement's length
FLEET_RUNS = {  # row: run_fleet keyword arguments ("ledger": which store; the outage needs the Redis server)
    "1 process alone (baseline)": {"processes": 1},
    "4 processes, no ledger (before)": {"processes": 4},
    "4 processes, Redis ledger; SIGKILL one at 12:00, restart one at 16:00": {
        "processes": 4, "ledger": "redis", "kill": (1, 12.0), "restart": (2, 16.0)},
    "the same, and Redis stopped from 13:00 to 13:30": {
        "processes": 4, "ledger": "redis", "kill": (1, 12.0), "restart": (2, 16.0), "outage": (13.0, 13.5)},
    "4 processes, SQLite ledger (one machine); SIGKILL at 12:00, restart at 16:00": {
        "processes": 4, "ledger": "sqlite", "kill": (1, 12.0), "restart": (2, 16.0)},
}


def bench_fleet(seed: int = 93, campaigns: int = 3, outage_seconds: float = 30.0, n: int = 200_000) -> None:
    """Bidder processes sharing one campaign-day's budget (``fleet.run_fleet``) beside one process alone and 4
    without a ledger; then the hot path with a ledger, store operations per 1,000 bids and the lease round trip."""
    import datetime as _dt

    import pandas as pd
    import redis

    from . import data, fleet, sim
    from .ledger import Ledger, Sync
    from .runtime import Pacer

    world = sim.make_world(campaigns=campaigns, seed=seed, volume_scale=10.0)
    history = sim.log_auction_history(world, days=35, seed=seed + 1)
    cells = data.aggregate(data.load_windows(history))
    date = str(pd.Timestamp("2026-01-05") + pd.Timedelta(days=35))[:10]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fleet.RedisServer(Path(tmp) / "redis") as server:
        model = Path(tmp) / "m"
        fitted = fit_cached(cells, model, progress=False, seed=seed).fit
        for c, name in enumerate(world.campaigns):
            day = sim.auction_day(world, c, date, seed=seed + 100 + c)
            budget, raw = sim.usual_budget(history, name), sim.raw_bid(world, c)
            for i, (label, spec) in enumerate(FLEET_RUNS.items()):
                kwargs = dict(spec)
                store = kwargs.pop("ledger", None)
                if store == "redis":
                    redis.Redis.from_url(server.url).flushdb()
                    kwargs["ledger"] = server.url
                elif store == "sqlite":
                    kwargs["ledger"] = f"sqlite:///{tmp}/ledger-{c}-{i}.db"
                if "outage" in kwargs:
                    kwargs["outage"] = (*kwargs["outage"], outage_seconds)
                    kwargs["server"] = server
                t0 = time.perf_counter()
                run = fleet.run_fleet(day, raw, budget, model, name, **kwargs)
                syncs = max([(s["ledger"] or {}).get("fleet_syncs") or 0 for s in run["statuses"]], default=0)
                rows.append({"campaign": name, "run": label, "budget": budget, "spent": round(run["spent"], 2),
                             "over_budget": round(run["overspend"], 2),
                             "utilization_pct": round(100 * run["utilization"], 2),
                             "conversions": round(run["expected_conversions"], 2), "bids": run["bids"],
                             "store_ops": syncs, "store_ops_per_1000_bids": round(1000 * syncs / run["bids"], 1),
                             "wall_s": round(time.perf_counter() - t0, 1)})
                print(rows[-1], flush=True)
        # the hot path: one process bidding as fast as it can on the wall clock (adjust_bid alone; then with a
        # third of the bids won and recorded)
        def calls(adjust, raw: float, bids: int) -> float:
            """us per call of ``adjust(raw)`` (a pacer's ``adjust_bid``, or the no-op: the same loop)."""
            start = time.perf_counter()
            for _ in range(bids):
                adjust(raw)
            return (time.perf_counter() - start) / bids * 1e6

        def with_wins(pacer, raw: float, bids: int) -> float:
            """us per bid when every bid carries an id and a third are recorded by it: without ids a record
            looks through every bid held (up to 120 s of them), which at this rate costs milliseconds."""
            price = 0.5 * raw * pacer.status()["bid_factor"]
            start = time.perf_counter()
            for i in range(bids):
                if pacer.adjust_bid(raw, bid_id=i) > 0 and i % 3 == 0:
                    pacer.record(price, clicks=1, bid_id=i)
            return (time.perf_counter() - start) / bids * 1e6

        def placed(pacer) -> int:  # bids placed so far
            return pacer._bid_offset + len(pacer._bid_t)

        def noop(bid, now=None):
            return bid

        base = min(calls(noop, 1.0, n) for _ in range(3))
        hot = []
        name = world.campaigns[0]
        for label, kwargs in (("alone (journal on disk)", {"journal": Path(tmp) / "journal"}),
                              ("Redis ledger", {"ledger": server.url}),
                              ("SQLite ledger", {"ledger": f"sqlite:///{tmp}/hot.db"})):
            pacer = Pacer.load(model, daily_budget=1e7, campaign=name, strict=True, **kwargs)
            # a raw bid that asks for about 1/100,000 of the hour's plan (at least 0.01): placed as asked, as
            # most bids are, not capped (the full path: ``bench runtime`` times it)
            s = pacer.status()
            raw = max(0.01, 1e-5 * s["plan"][s["hour"]]) / s["bid_factor"]
            with_wins(pacer, raw, 10_000)  # warm
            before = placed(pacer)
            alone_us = min(calls(pacer.adjust_bid, raw, n) for _ in range(3))
            share = (placed(pacer) - before) / (3 * n)
            ops = pacer._ledger.operations if pacer._ledger else 0
            mixed_us = with_wins(pacer, raw, n)
            ops = (pacer._ledger.operations - ops) if pacer._ledger else 0
            hot.append((label, alone_us, share, mixed_us, ops,
                        pacer._ledger.seconds / max(pacer._ledger.operations, 1) * 1e3 if pacer._ledger else None))
            pacer.close()
        # a store that hangs (SIGSTOP: connections open, no answers, as behind a network partition)
        pacer = Pacer.load(model, daily_budget=1e7, campaign=name, strict=True, ledger=server.url)
        server.freeze()
        frozen = {"calls": 0, "placed": 0, "worst": 0.0, "blocked": 0.0}
        start = time.perf_counter()
        while time.perf_counter() < start + FROZEN_SECONDS:
            t0 = time.perf_counter()
            frozen["placed"] += pacer.adjust_bid(1.0) > 0
            took = time.perf_counter() - t0
            frozen["calls"] += 1
            frozen["worst"] = max(frozen["worst"], took)
            frozen["blocked"] += took if took > 0.01 else 0.0
        server.thaw()
        thawed = time.perf_counter()
        while pacer.status()["ledger"]["unreachable"] and time.perf_counter() < thawed + 30:
            pacer.adjust_bid(1.0)
        frozen["resumed"] = time.perf_counter() - thawed
        pacer.close()
        round_trips = {}
        for label, url in (("Redis", server.url), ("SQLite", f"sqlite:///{tmp}/rtt.db")):
            ledger = Ledger(url, "rtt")
            times = []
            for i in range(500):
                t0 = time.perf_counter()
                ledger.sync(_dt.date.today().isoformat(), Sync(ledger.holder, time.time(), 100.0, 0.001, {i % 288: 1.0},
                                                               {i % 24: 0.0}, want=1.0, lines=['{"t": 0}']))
                times.append(time.perf_counter() - t0)
            round_trips[label] = np.percentile(times, [50, 99]) * 1e3
            ledger.close()
    table = pd.DataFrame(rows)
    alone = table[table["run"] == next(iter(FLEET_RUNS))].set_index("campaign")["conversions"]
    table["conversions_vs_alone_pct"] = (100 * table["conversions"] / table["campaign"].map(alone)).round(2)
    summary = table.groupby("run", sort=False).agg(
        spent=("spent", "sum"), budget=("budget", "sum"), max_over_budget=("over_budget", "max"),
        min_utilization_pct=("utilization_pct", "min"), conversions=("conversions", "sum"),
        min_conversions_vs_alone_pct=("conversions_vs_alone_pct", "min"),
        store_ops_per_1000_bids=("store_ops_per_1000_bids", "mean"))
    summary["conversions_vs_alone_pct"] = (100 * summary["conversions"] / summary["conversions"].iloc[0]).round(2)

    lines = _header(f"Fleet: bidder processes sharing one budget (world seed {seed}, {campaigns} campaigns x 1 day, "
                    f"fit gate {'pass' if fitted.diagnostics.passed else 'FAIL'})") + [
        "Each campaign-day's auction stream (second price; ~10x the demo's traffic) is dealt round robin to the "
        "bidder processes (real OS processes, `fleet.run_fleet`); conversions are expected conversions (true "
        "rates of the auctions won). The budget is half the campaign's usual daily spend. `store_ops_per_1000_bids` "
        "here is per opportunity: this stream brings a process an opportunity every several seconds, more "
        f"rarely than its periodic sync (runtime.SYNC_EVERY), so nearly every bid syncs; the hot-path table below "
        "measures a process bidding as fast as it can. The Redis outage: the server stopped (SIGTERM) at 13:00 of "
        f"the stream and started again at 13:30, at least {outage_seconds:.0f} s of wall time later.", "",
        "## Per run, summed over campaigns", "", _markdown(summary), "", "## Per campaign", "", _markdown(table), "",
        "## Hot path: one process bidding as fast as it can (wall clock); then with bid ids, a third of the bids "
        "won and recorded by id", "",
        f"No-op Python call in the same run and the same loop (`noop(raw)` where the pacer's rows call "
        f"`adjust_bid(raw)`): {base:.3f} us. `adjust_bid` reads the wall clock here (`now=None`), "
        "so its periodic syncs are counted in its time.", "",
        "| pacer | adjust_bid per call | ratio to the no-op | bids placed | adjust_bid + record (a third won, by id), "
        "per bid | store operations per 1,000 bids (with records) | mean sync |", "|---|---|---|---|---|---|---|"]
    for label, alone_us, share, mixed_us, ops, sync_ms in hot:
        lines.append(f"| {label} | {alone_us:.2f} us | {alone_us / base:.1f}x | {100 * share:.1f}% | "
                     f"{mixed_us:.2f} us | "
                     f"{1000 * ops / n:.3f} | {'' if sync_ms is None else f'{sync_ms:.2f} ms'} |")
    lines += ["", f"## A store that hangs: Redis frozen (SIGSTOP) for {FROZEN_SECONDS:.0f} s while one process bids "
              "as fast as it can", "",
              f"{frozen['calls']:,} calls, {frozen['placed']:,} placed (what the lease held when it froze covered); "
              f"the longest call took {1000 * frozen['worst']:.0f} ms; calls held back by a sync attempt (> 10 ms) took "
              f"{100 * frozen['blocked'] / FROZEN_SECONDS:.1f}% of the time (attempts after 1, 2, 4, 8, 8, ... s, "
              f"each up to ledger.SOCKET_TIMEOUT); after the thaw, bidding resumed {frozen['resumed']:.1f} s later "
              "(the next attempt).",
              "", "## Lease round trip (one sync: report, take a lease), 500 in a row", "",
              "| store | median | 99th percentile |", "|---|---|---|"]
    lines += [f"| {label} | {p50:.3f} ms | {p99:.3f} ms |" for label, (p50, p99) in round_trips.items()]
    _write("fleet", lines)


def bench_scenarios(seed: int = 41, days: int = 7, campaigns: int = 3, engine: str = "auto") -> None:
    """``gaelp-bayes simulate`` over every scenario (tables and figures in reports/simulation/)."""
    from . import sim

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


INDEX_ORDER = ("robustness", "pacing", "scenarios", "delay", "drift", "fleet", "calibration", "open_bandit", "allocation",
               "allocation_speed", "runtime_speed", "events", "sparse", "fit_speed")


def write_index() -> Path:
    """reports/benchmarks.md: this machine and versions, then every table under reports/benchmarks/."""
    tables = sorted(OUT_DIR.glob("*.md"), key=lambda p: (INDEX_ORDER.index(p.stem) if p.stem in INDEX_ORDER
                                                         else len(INDEX_ORDER), p.stem))
    lines = _header("gaelp_bayes benchmarks") + [
        f"CPU: {_cpu_name()}. Each section below is one benchmark's table as written by its last run (its own "
        "line says when); figures sit beside their baseline measured in that same run. Regenerate with "
        "`gaelp-bayes bench all` (`make bench`), or one part with `gaelp-bayes bench NAME`.", ""]
    lines += [f"- [{p.stem}](benchmarks/{p.name})" for p in tables] + [""]
    for path in tables:
        text = path.read_text().strip().splitlines()
        lines += ["#" + text[0]] + [("#" + line if line.startswith("## ") else line) for line in text[1:]] + [""]
    index = OUT_DIR.parent / "benchmarks.md"
    index.write_text("\n".join(lines) + "\n")
    print(f"wrote {index}")
    return index


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gaelp-bayes bench")
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--sizes", default="1,20,200", type=whole_numbers)
    f.add_argument("--samplers", default="auto")
    f.add_argument("--baseline", default=None, help="folder of another version of the package to time beside")
    c = sub.add_parser("calibration")
    c.add_argument("--campaigns", type=int, default=10)
    c.add_argument("--seed", type=int, default=21)
    engine_choice = {"choices": ["auto", "laplace", "nuts"], "default": "auto",
                     "help": "the inference engine of the fits (a table of another than auto is NAME_ENGINE.md)"}
    c.add_argument("--engine", **engine_choice)
    al = sub.add_parser("allocation")
    al.add_argument("--datasets", type=int, default=10)
    al.add_argument("--draws", type=int, default=500)
    sub.add_parser("allocation-speed")
    ob = sub.add_parser("open-bandit")
    ob.add_argument("--root", default=OPEN_BANDIT, help="folder of the Open Bandit sample")
    sub.add_parser("events")
    sub.add_parser("sparse")
    rb = sub.add_parser("robustness", help="the battery of data shapes (about an hour on 2 cores)")
    rb.add_argument("--shapes", default="all", help="comma-separated battery shapes (default: all)")
    rb.add_argument("--seeds", default=",".join(map(str, ROBUSTNESS_SEEDS)), type=whole_numbers)
    rb.add_argument("--slow-seeds", type=int, default=1, help=f"seeds for {', '.join(SLOW_SHAPES)}")
    rb.add_argument("--baseline", default=None, help="robustness_runs.jsonl of another version, shown beside")
    rt = sub.add_parser("runtime")
    rt.add_argument("--model", default="models/demo")
    rt.add_argument("--campaign", default=None)
    pc = sub.add_parser("pacing")
    pc.add_argument("--regimes", default="rich,sparse")
    pc.add_argument("--draws", type=int, default=1000)
    pc.add_argument("--engine", **engine_choice)
    sc = sub.add_parser("scenarios")
    sc.add_argument("--seed", type=int, default=41)
    sc.add_argument("--days", type=int, default=7)
    sc.add_argument("--engine", **engine_choice)
    ca = sub.add_parser("cache", help="Pacer.load and allocate of one campaign out of many (cold page cache)")
    ca.add_argument("--sizes", default="100,1000,10000", type=whole_numbers, help="campaigns, comma-separated (10,000: 20 GB on disk)")
    de = sub.add_parser("delay", help="history exported while conversions arrive: censored vs naive fit")
    de.add_argument("--seeds", default="61,62,63", type=whole_numbers, help="world seeds, comma-separated")
    de.add_argument("--engine", **engine_choice)
    dr = sub.add_parser("drift", help="rates that move over the weeks: the drift model vs every week alike")
    dr.add_argument("--seeds", default="71,72,73", type=whole_numbers, help="world seeds, comma-separated")
    dr.add_argument("--engine", **engine_choice)
    sub.add_parser("shard-cost", help="what one shard of a sharded fit costs: draws, leapfrog steps, gradient")
    sc2 = sub.add_parser("scale", help="sharded fits on a Dask LocalCluster, beside the joint fit")
    sc2.add_argument("--sizes", default="200", type=whole_numbers, help="campaigns, comma-separated (2000 takes hours on 2 cores)")
    sc2.add_argument("--workers", default="1,2", type=whole_numbers, help="LocalCluster sizes, comma-separated")
    sc2.add_argument("--joint-up-to", type=int, default=200, help="fit the joint model beside up to this size")
    sc2.add_argument("--seed", type=int, default=31, help="world seed")
    sc2.add_argument("--same-base-rate", action="store_true",
                     help="every campaign's base conversion rate the same (no spread of campaign levels)")
    fl = sub.add_parser("fleet", help="bidder processes sharing one budget on a Redis/SQLite ledger")
    fl.add_argument("--seed", type=int, default=93, help="world seed")
    fl.add_argument("--outage-seconds", type=float, default=30.0, help="wall time the Redis server is stopped")
    en = sub.add_parser("engines", add_help=False, help="the Laplace engine beside NUTS: agreement, calibration, "
                        "sbc, gate, speed (gaelp-bayes bench engines --help)")
    en.add_argument("rest", nargs=argparse.REMAINDER)
    sub.add_parser("index", help="only rebuild reports/benchmarks.md from the tables")
    sub.add_parser("all", help="every benchmark above with its defaults (about an hour on 2 cores)")
    args = p.parse_args(argv)
    try:
        run(args)
    except GaelpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    write_index()
    return 0


def run(args: argparse.Namespace) -> None:
    """The benchmark ``args.what`` (each writes its table under reports/benchmarks/)."""
    if args.what == "index":
        pass
    elif args.what == "engines":
        from . import bench_engines

        bench_engines.main(args.rest)
    elif args.what == "scenarios":
        bench_scenarios(args.seed, args.days, engine=args.engine)
    elif args.what == "all":
        bench_runtime("models/demo", "campaign_01")
        bench_allocation_speed()
        bench_calibration(10, 21)
        bench_open_bandit()
        bench_events()
        bench_sparse()
        bench_allocation(10, 500)
        bench_pacing(["rich", "sparse"])
        bench_scenarios()
        bench_delay()
        bench_drift()
        bench_fleet()
        bench_fit([1, 20, 200], ["auto"])
    elif args.what == "sparse":
        bench_sparse()
    elif args.what == "fleet":
        bench_fleet(args.seed, outage_seconds=args.outage_seconds)
    elif args.what == "cache":
        bench_cache(args.sizes)
    elif args.what == "delay":
        bench_delay(seeds=tuple(args.seeds), engine=args.engine)
    elif args.what == "drift":
        bench_drift(seeds=tuple(args.seeds), engine=args.engine)
    elif args.what == "shard-cost":
        bench_shard_cost()
    elif args.what == "scale":
        bench_scale(args.sizes, args.workers,
                    args.joint_up_to, args.seed, args.same_base_rate)
    elif args.what == "robustness":
        from .battery import SHAPES

        bench_robustness(list(SHAPES) if args.shapes == "all" else args.shapes.split(","),
                         args.seeds, args.slow_seeds, args.baseline)
    elif args.what == "events":
        bench_events()
    elif args.what == "open-bandit":
        bench_open_bandit(args.root)
    elif args.what == "allocation-speed":
        bench_allocation_speed()
    elif args.what == "allocation":
        bench_allocation(args.datasets, args.draws)
    elif args.what == "runtime":
        bench_runtime(args.model, args.campaign)
    elif args.what == "pacing":
        bench_pacing(args.regimes.split(","), args.draws, engine=args.engine)
    elif args.what == "fit":
        bench_fit(args.sizes, args.samplers.split(","), args.baseline)
    else:
        bench_calibration(args.campaigns, args.seed, engine=args.engine)


if __name__ == "__main__":
    sys.exit(main())
