"""Benchmarks of fitting: time by size and engine, sharded scale-out, a shard's cost, the robustness battery, sparse data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import (OUT_DIR, _campaign_rates, _header, _held_out, _markdown, _write, gate_summary)
from ..errors import GaelpError
from ..pipeline import fit_cached


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


def bench_scale(sizes: list[int], workers: list[int], joint_up_to: int, seed: int = 31,
                same_base_rate: bool = False) -> None:
    """Sharded fits of campaigns x 8 weeks on a LocalCluster of each number of ``workers``, timed warm (a
    short fit of the same structure compiles first), with held-out coverage on a 9th week of simulated
    truth; up to ``joint_up_to`` campaigns, the joint fit of the same data beside (time, coverage, and
    how far the sharded posterior means are from the joint ones).  ``same_base_rate``: every campaign's base
    conversion rate the same (a population whose campaign-level spread is zero)."""
    import pandas as pd

    from .. import data, sim

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
            from ..model import config, sharded  # the structures compiled: a population fit and one shard

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

    from .. import data, nuts, sim
    from ..model import DEFAULT, config, fitting, sharded
    from ..model.conversion import PopulationPrior
    from ..model.gate import diagnose
    from ..model.parts import build_model, padded

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


def bench_sparse(campaigns: int = 30, days: int = 3, seed: int = 3) -> None:
    """Many campaigns with few events, base rates 0.01%-50%, a few days, no spend: default fit settings."""
    import pandas as pd

    from .. import data, model

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

    from .. import battery

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
