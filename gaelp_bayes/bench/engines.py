"""Benchmarks of the inference engines: the Laplace engine beside NUTS on the same data in the same run.

    gaelp-bayes bench engines agreement    # posteriors vs NUTS on six worlds (and NUTS vs NUTS: the noise floor)
    gaelp-bayes bench engines calibration  # held-out coverage at 200 and 2,000 campaigns, and a point population
    gaelp-bayes bench engines sbc          # simulation-based calibration of the per-campaign approximation
    gaelp-bayes bench engines gate         # injected failures: what the gate flags and sends to NUTS
    gaelp-bayes bench engines speed        # everything included, fresh processes, cold and warm

Each writes a table under reports/benchmarks/ (engines_*.md).  The worlds' seeds (201-206, 301-302, 401-402)
were not used to choose anything in the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .common import _header, _held_out, _markdown, _write, whole_numbers

AGREEMENT_SEEDS = (201, 202, 203, 204, 205, 206)


# ----- worlds ----------------------------------------------------------------------------------------------------

def agreement_worlds(seed0: int = 201) -> dict:
    """Six worlds of 10 campaigns each: name -> (training windows, true rates [campaign, 7, 24], names)."""
    from .. import battery, sim

    worlds = {}
    world = sim.make_world(campaigns=10, seed=seed0)
    worlds["stationary (8 weeks)"] = (sim.log_history(world, days=56, seed=seed0 + 10), world.cvr, world.campaigns)
    world = sim.make_world(campaigns=10, seed=seed0 + 1, base_cvr=(0.03, 0.03))
    worlds["one base rate (campaign spread 0)"] = (sim.log_history(world, days=56, seed=seed0 + 11), world.cvr,
                                                   world.campaigns)
    drawn = battery.draw(battery.Shape(campaigns=10, days=28, cell_sd=0.0), seed=seed0 + 2)
    worlds["no cell noise (4 weeks)"] = (drawn.train, drawn.cvr, drawn.campaigns)
    world = sim.make_world(campaigns=10, seed=seed0 + 3)
    moving = sim.drifting_cvr(world, 49, step=-0.3, step_day=35)
    worlds["drift with a step (7 weeks)"] = (sim.log_history(world, days=49, seed=seed0 + 13, cvr=moving),
                                             world.cvr * np.exp(-0.3), world.campaigns)
    drawn = battery.draw(battery.Shape(campaigns=10, days=6, holdout_days=1, base_cvr=(0.008, 0.012)), seed=seed0 + 4)
    worlds["young and sparse (6 days, 1%)"] = (drawn.train, drawn.cvr, drawn.campaigns)
    drawn = battery.draw(battery.Shape(campaigns=10, days=14, base_cvr=(0.0003, 0.002),
                                       clicks_per_day=(20.0, 600.0)), seed=seed0 + 5)
    worlds["zero conversions (some campaigns)"] = (drawn.train, drawn.cvr, drawn.campaigns)
    return worlds


def _exported(path: Path) -> dict:
    """The exported quantities of a cache: {group: [draw, ...] arrays} (each campaign's level, hour curve,
    trend and last-week offset, walk sd; and the runtime's cell rates, volumes, costs and values)."""
    from .. import cache

    manifest, tree = cache.read_posterior(path, groups=("posterior",))
    post = tree["posterior"].to_dataset()
    flat = lambda v: v.values.reshape((-1,) + v.shape[2:])  # noqa: E731
    out = {"level": flat(post["campaign_level"]),
           "curve": flat(post["dev_coef"]) + flat(post["hour_coef"])[:, None, :]}
    if "trend" in post:
        out["drift"] = np.concatenate([flat(post["trend"]), flat(post["drift_now"]),
                                       flat(post["sigma_walk"])[:, None]], axis=1)
    _, arrays = cache.read_runtime(path)
    out["rates"] = np.asarray(arrays["cvr"][:, :-1], np.float64)
    for name in ("volume", "cpc", "rpc"):
        if name in arrays:
            out[name] = np.log(np.asarray(arrays[name][:, :-1], np.float64))
    return out


def _compare(got: dict, reference: dict, relative_rates: bool = True) -> dict:
    """Per group: |posterior mean difference| in reference sds (median, worst), sd ratios (min, median, max),
    and for the rates the relative difference of the means (median, worst)."""
    rows = {}
    for group, ref in reference.items():
        if group not in got:
            continue
        g = got[group].reshape(got[group].shape[0], -1)
        r = ref.reshape(ref.shape[0], -1)
        sd = r.std(axis=0)
        keep = sd > 1e-9
        z = np.abs(g.mean(axis=0) - r.mean(axis=0))[keep] / sd[keep]
        ratio = g.std(axis=0)[keep] / sd[keep]
        row = {"z_median": np.median(z), "z_worst": z.max(), "sd_ratio_min": ratio.min(),
               "sd_ratio_median": np.median(ratio), "sd_ratio_max": ratio.max(), "quantities": int(keep.sum())}
        if group == "rates" and relative_rates:
            rel = np.abs(g.mean(axis=0) / r.mean(axis=0) - 1)
            row.update(rate_rel_median=np.median(rel), rate_rel_worst=rel.max())
        rows[group] = row
    return rows


def bench_agreement(seed0: int = 201, nuts_seeds: tuple[int, int] = (11, 12)) -> None:
    """The Laplace engine against NUTS on six worlds of 10 campaigns, and NUTS against NUTS (another seed):
    the Monte Carlo noise floor of such a comparison, measured in the same run."""
    from .. import data
    from ..pipeline import fit_cached

    rows, notes = [], []
    for name, (train, _, _) in agreement_worlds(seed0).items():
        cells = data.aggregate(data.load_windows(train))
        with tempfile.TemporaryDirectory() as tmp:
            runs = {}
            for k, (label, options) in enumerate((("laplace", {"engine": "laplace", "seed": 1}),
                                                  ("laplace (other seed)", {"engine": "laplace", "seed": 2}),
                                                  ("nuts", {"engine": "nuts", "seed": nuts_seeds[0]}),
                                                  ("nuts (other seed)", {"engine": "nuts", "seed": nuts_seeds[1]}))):
                start = time.perf_counter()
                fitted = fit_cached(cells, Path(tmp) / f"fit_{k}", progress=False, **options)
                runs[label] = (fitted, time.perf_counter() - start)
            reference = _exported(runs["nuts"][0].path)
            for label in ("laplace", "laplace (other seed)", "nuts (other seed)"):
                cached, seconds = runs[label]
                diag = cached.manifest["diagnostics"]
                fallback = diag.get("fallback", [])
                for group, row in _compare(_exported(cached.path), reference).items():
                    rows.append({"world": name, "fit": label, "group": group, **row, "seconds": round(seconds, 1),
                                 "nuts seconds": round(runs["nuts"][1], 1), "gate": "pass" if diag["passed"] else "FAIL",
                                 "fallback": len(fallback), "campaigns": len(cells.campaigns)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(Path("reports/benchmarks") / "engines_agreement.csv", index=False)
    lines = _header("Laplace engine against NUTS: exported posteriors on six worlds") + [
        f"Six worlds of 10 simulated campaigns each (seeds {seed0}-{seed0 + 5}, not used to choose anything in the "
        "engine), fitted four times on the same data in this run: the Laplace engine with two seeds, NUTS (the "
        "reference) and NUTS with another seed. Each row compares one fit's exported quantities with the reference's, per "
        "group: *level* (each campaign's log-odds level), *curve* (its 12 hour-curve coefficients), *drift* (its "
        "trend and last-week offset, and the walk's sd), *rates* (every cell's rate in the runtime cache), "
        "*volume*, *cpc* (log clicks per hour and log cost per click per cell), *rpc* (log value per conversion). "
        "*|z|*: |posterior mean difference| in reference sds; *sd ratio*: posterior sd over the reference's; "
        "*rate rel*: relative difference of the rates' means. The NUTS-vs-NUTS rows are the Monte Carlo noise "
        "of the comparison itself: a Laplace row at that level agrees as well as NUTS agrees with itself. "
        "*fallback*: campaigns refitted with NUTS by the Laplace engine's gate.", ""]
    table = frame.assign(**{c: frame[c].round(3) for c in frame.columns if frame[c].dtype == float})
    lines.append(_markdown(table.set_index("world")))
    summary = frame.groupby(["fit", "group"])[["z_median", "z_worst", "sd_ratio_min", "sd_ratio_max"]].agg(
        {"z_median": "median", "z_worst": "max", "sd_ratio_min": "min", "sd_ratio_max": "max"})
    lines += ["", "Over the six worlds (median of the medians, worst of the worst):", "",
              _markdown(summary.round(3).reset_index().set_index("fit"))]
    lines += ["", "Fit time (everything: fit and cache) and fallbacks per world (Laplace row):", "",
              _markdown(frame[frame["fit"] == "laplace"].drop_duplicates("world")[
                  ["world", "seconds", "nuts seconds", "fallback", "campaigns"]].set_index("world"))]
    _write("engines_agreement", lines + notes)


# ----- calibration at scale --------------------------------------------------------------------------------------

def bench_calibration(sizes: tuple[int, ...] = (200, 2000), workers: int = 2, seed: int = 301,
                      point_up_to: int = 200) -> None:
    """Held-out 90% coverage (conversions per window, true cell rates) of the Laplace engine on campaigns x 8
    weeks (the 9th held out), on a LocalCluster of ``workers``; up to ``point_up_to`` campaigns also with the
    population held at its posterior mean (a point): what carrying its uncertainty is worth."""
    from .. import data, sim
    from ..pipeline import fit_cached

    rows = []
    for n in sizes:
        world = sim.make_world(campaigns=n, seed=seed)
        history = sim.log_history(world, days=63, seed=seed + 1)
        stamps = pd.to_datetime(history["timestamp"], utc=True)
        cut = stamps.min() + pd.Timedelta(days=56)
        cells = data.aggregate(data.load_windows(history[stamps < cut]))
        holdout = history[stamps >= cut]
        kinds = [("full population", {})] + ([("point population", {"point_population": True})] if n <= point_up_to
                                            else [])
        for kind, extra in kinds:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                cached = fit_cached(cells, Path(tmp) / "m", sharding={"workers": workers}, progress=False, seed=seed,
                                    engine="laplace", **({"laplace_options": extra} if extra else {}))
                wall = time.perf_counter() - start
                manifest = cached.manifest
                cal = _held_out(Path(tmp) / "m", holdout, world)
                core = sum(manifest["settings"]["laplace"]["seconds"]) + manifest["settings"]["laplace"].get(
                    "population_seconds", 0.0)
                sparse = _sparse_coverage(Path(tmp) / "m", world, cells)
            rows.append({"campaigns": n, "population": kind, "workers": workers, "wall s": round(wall, 1),
                         "core-s per campaign": round(core / n, 3),
                         "fallback": len(manifest["diagnostics"]["fallback"]),
                         "PIT 90%": round(cal["pit_coverage"], 3), "rate 90%": round(cal["rate_coverage"], 3),
                         "rate 90%, sparsest tenth": round(sparse, 3),
                         "gate": "pass" if manifest["diagnostics"]["passed"] else "FAIL"})
            print(rows[-1], flush=True)
            lines = _header("Laplace engine: held-out calibration at scale") + [
                f"Simulated campaigns (world seed {seed}) x 8 weeks, the 9th week held out; the Laplace engine on a "
                f"LocalCluster of {workers} workers (everything: cluster start, population, campaigns, gate, "
                "cache). *PIT 90%*: randomized-PIT coverage of held-out conversions per window; *rate 90%*: 90% "
                "intervals covering the true cell rates, over every campaign and over the tenth with the fewest "
                "clicks; *core-s per campaign*: the blocks' and the population's compute over the campaigns. "
                "*point population*: the campaigns conditioned on the population's posterior mean instead of its "
                "draws.", "", _markdown(pd.DataFrame(rows).set_index("campaigns"))]
            _write("engines_calibration", lines)


def _sparse_coverage(path: Path, world, cells) -> float:
    """90% coverage of the true cell rates over the tenth of campaigns with the fewest clicks."""
    from .. import cache

    manifest, arrays = cache.read_runtime(path)
    clicks = np.bincount(cells.campaign, weights=cells.clicks, minlength=len(cells.campaigns))
    few = np.argsort(clicks)[:max(1, len(clicks) // 10)]
    truth = world.cvr[[world.campaigns.index(manifest["campaigns"][i]) for i in few]]
    lo, hi = np.quantile(arrays["cvr"][:, few], [0.05, 0.95], axis=0)
    return float(((lo <= truth) & (truth <= hi)).mean())


# ----- simulation-based calibration ------------------------------------------------------------------------------

def bench_sbc(replications: int = 300, ranks: int = 99, seed: int = 401) -> None:
    """Simulation-based calibration (Talts et al. 2018) of the per-campaign approximation: a population
    fixed at known values, a campaign's level and hour curve drawn from its prior, its cells' conversions from
    the model (beta-binomial, weekday effects, cell noise) on a real campaign's clicks; the campaign stage
    given the population; the rank of each true value among ``ranks`` of its draws.  Uniform ranks (a chi-
    square test over 10 bins per quantity) mean the approximation is calibrated.  Without drift: with drift
    the model's weekly trials are not whole numbers, and it has no exact generator to draw from."""
    from scipy import stats

    from .. import data, sim
    from ..model.config import DEFAULT
    from ..model.laplace import conversion as lconv
    from ..model.laplace import engine

    config = replace(DEFAULT, drift=False)
    world = sim.make_world(campaigns=1, seed=seed)
    cells = data.aggregate(data.load_windows(sim.log_history(world, days=14, seed=seed + 1)))
    base = lconv.ConversionModel(lconv.conversion_data(cells, config.hour_harmonics, False), False, config)
    rng = np.random.default_rng(seed)
    psi = np.log([[0.3, 0.15]])  # sigma_hour, sigma_cell
    days = base.day_basis.shape[1]
    shared = rng.normal(0, 0.2, (1, days))
    prior = base.campaign_prior(psi)
    cov = np.linalg.inv(prior.precision[0])
    names = ["level", "hour coef 1", "hour coef 2", "hour coef 6", "rate (log)"]
    picks = [0, 1, 2, 6]
    counts = np.zeros((len(names), 10), int)
    flagged = 0
    start = time.perf_counter()
    for r in range(replications):
        theta = rng.multivariate_normal(prior.offset, cov)
        eta = (theta @ base.data.design.T)[None, :] + base.dow(shared)[0][:, None]
        s = 1.0 / 0.15**2
        p = rng.beta(s * (1 + np.exp(eta)), s * (1 + np.exp(-eta)))
        n = base.data.trials[0]
        k = rng.binomial(n.astype(int), p)
        model = lconv.ConversionModel(replace(base.data, conversions=k[None].astype(float)), False, config)
        pop = engine.Population(np.repeat(psi, 20, 0), np.repeat(shared, 20, 0), np.arange(1), 0.0, 2000.0, 2000,
                                psi[0])
        draws = engine.campaigns(model, np.arange(1), pop, 1000, rng, proposals=2000,
                                 quantities=lconv.rate_quantity(model, pop.psi, pop.shared))
        flagged += int(not draws.passed()[0])
        post = draws.theta[:, 0]
        thin = post[np.linspace(0, len(post) - 1, ranks).round().astype(int)]
        true_rate = lconv.rate_quantity(model, pop.psi, pop.shared)(0, theta[None], np.zeros(1, int))[0, 0]
        thin_rate = lconv.rate_quantity(model, pop.psi, pop.shared)(0, thin, np.zeros(ranks, int))[:, 0]
        values = [(thin[:, i], theta[i]) for i in picks] + [(thin_rate, true_rate)]
        for q, (draws_q, truth) in enumerate(values):
            rank = int((draws_q < truth).sum())
            counts[q, min(rank * 10 // (ranks + 1), 9)] += 1
    seconds = time.perf_counter() - start
    rows = []
    for q, name in enumerate(names):
        chi2 = stats.chisquare(counts[q])
        rows.append({"quantity": name, **{f"bin {b + 1}": int(c) for b, c in enumerate(counts[q])},
                     "chi-square p": round(float(chi2.pvalue), 3)})
    lines = _header("Simulation-based calibration of the per-campaign approximation") + [
        f"{replications} replications (seed {seed}): one campaign, its level and 12 hour-curve coefficients "
        "drawn from their prior given a fixed population (sigma_hour 0.3, sigma_cell 0.15, weekday effects drawn "
        "once), conversions drawn from the model on 2 weeks of a simulated campaign's clicks; the engine's "
        f"campaign stage (2,000 importance draws, 1,000 kept) given that population; the rank of each true value "
        f"among {ranks} of the campaign's draws, in 10 bins (uniform: {replications // 10} each). *chi-square "
        f"p*: the uniformity test per quantity. {flagged} of {replications} campaigns failed the gate (would be "
        f"refitted with NUTS; their ranks are counted here all the same). {seconds:.0f} s.", "",
        _markdown(pd.DataFrame(rows).set_index("quantity"))]
    _write("engines_sbc", lines)


# ----- the gate on injected failures -----------------------------------------------------------------------------

def bench_gate(seed: int = 302, campaigns: int = 30) -> None:
    """What the gate flags (and sends to NUTS): campaigns outside a population of 24 members, under injected
    failures: the population's means shifted by 3 of their posterior sds and by 3 campaign-prior sds, a
    campaign ten times the population's rate, a step change in a campaign's rate."""
    from .. import data, sim
    from ..model.config import DEFAULT
    from ..model.laplace import conversion as lconv
    from ..model.laplace import engine

    rows = []
    world = sim.make_world(campaigns=campaigns, seed=seed)
    base = sim.log_history(world, days=35, seed=seed + 1)
    members = np.arange(24)
    outside = np.arange(24, campaigns)
    baseline: dict = {}  # the first case's campaign levels: how far each injected case moves them

    def run(history, shift=None, label=""):
        cells = data.aggregate(data.load_windows(history))
        model = lconv.ConversionModel(lconv.conversion_data(cells, DEFAULT.hour_harmonics, True), True, DEFAULT)
        rng = np.random.default_rng(seed)
        pop = engine.population(model, members, 100, rng)
        if shift is not None:
            pop = shift(pop, model)
        draws = engine.campaigns(model, np.arange(len(cells.campaigns)), pop, 1000, rng,
                                 quantities=lconv.rate_quantity(model, pop.psi, pop.shared))
        passed = draws.passed(members)
        level = draws.theta[:, :, 0]
        baseline.setdefault("level", (level.mean(axis=0), level.std(axis=0)))
        moved = np.abs(level.mean(axis=0) - baseline["level"][0]) / baseline["level"][1]
        rows.append({"case": label, "outside campaigns flagged": f"{int((~passed[outside]).sum())} of {len(outside)}",
                     "largest move of a level (its sds)": round(float(moved[:-1].max()), 2),
                     "members flagged": f"{int((~passed[members]).sum())} of {len(members)}",
                     "largest conflict |z| outside": round(float(draws.conflict[outside].max()), 2),
                     "outside together (population shift)": round(engine.population_shift(
                         draws.level_z[outside][passed[outside]], draws.level_load[outside][passed[outside]]), 2),
                     "max k-hat": round(float(np.nanmax(draws.khat)), 2),
                     "min ESS": int(np.nanmin(draws.ess)), "max quantity k-hat": round(float(np.nanmax(
                         draws.quantity_khat)), 2)})
        print(rows[-1], flush=True)

    run(base, label="none (the data as drawn)")

    def shifted(by_campaign_sd: bool):
        def shift(pop, model):
            out = engine.Population(pop.psi.copy(), pop.shared.copy(), pop.members, pop.khat, pop.ess,
                                    pop.proposals, pop.mode)
            scale = np.exp(pop.psi[:, 0]).mean() if by_campaign_sd else pop.shared[:, 0].std()
            out.shared[:, 0] += 3 * scale  # mu, the campaigns' mean level
            return out
        return shift

    run(base, shifted(False), "population mean level +3 of its posterior sds")
    run(base, shifted(True), "population mean level +3 campaign-prior sds (sigma_campaign)")
    ten = base.copy()
    last = ten["campaign"] == world.campaigns[-1]
    rate = ten["conversions"].sum() / ten["clicks"].sum()
    ten.loc[last, "conversions"] = np.random.default_rng(seed + 2).binomial(ten.loc[last, "clicks"], min(0.9, 10 * rate))
    run(ten, label="last campaign at 10x the population's rate")
    moving = sim.drifting_cvr(world, 35, step=-0.5, step_day=28)
    stepped = sim.log_history(world, days=35, seed=seed + 1, cvr=moving)
    run(stepped, label="every campaign's rate x0.6 in the last week (a step)")
    lines = _header("Laplace engine: what the gate flags") + [
        f"{campaigns} simulated campaigns x 5 weeks (world seed {seed}); the conversion part's population fitted on "
        f"24 of them, all {campaigns} campaigns' draws given it. A flagged campaign fails the gate (Pareto k-hat "
        "above the sample-size threshold, ESS below 400, a quantity's k-hat of 0.7 or more, or, outside the "
        f"population's members, a prior-data conflict |z| above {engine.CONFLICT_Z}) and is refitted with NUTS. "
        "*outside together*: the sum of the outside campaigns' level z over its sd under the model, which "
        "counts the error of the population mean they share (`engine.population_shift`; standard normal when "
        f"the members represent them); beyond {engine.CONFLICT_Z} the population fails "
        "its gate (the engine `auto` then fits with NUTS). "
        "*largest move of a level*: how far the case moved a campaign's posterior mean level from the first "
        "row's, in that row's posterior sds, over every campaign but the last (the one made 10x): what a wrong "
        "population costs the campaigns. "
        "The drift's hyperparameters are never free per campaign in this engine (they are the population's), so "
        "that failure cannot be injected.", "", _markdown(pd.DataFrame(rows).set_index("case"))]
    _write("engines_gate", lines)


# ----- speed -----------------------------------------------------------------------------------------------------

def _timed_fit(windows: Path, out: Path, engine: str, compiledir: str, extra: list[str] = ()) -> dict:
    """``gaelp-bayes fit`` in a fresh process (the compile cache ``compiledir``): wall seconds, the fit's own
    seconds and the gate."""
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={compiledir}", "NUMBA_CACHE_DIR": compiledir}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gaelp_bayes", "fit", str(windows), "--out", str(out), "--overwrite",
                           "--engine", engine, "--quiet", *extra], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if not (out / "manifest.json").exists():
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "fit": manifest["fit_seconds"], "passed": manifest["diagnostics"]["passed"],
            "fallback": len(manifest["diagnostics"].get("fallback", [])), "manifest": manifest}


def bench_speed(sizes: tuple[int, ...] = (1, 20, 200, 2000), nuts_up_to: int = 20, workers: int = 2,
                seed: int = 402) -> None:
    """Fit time, everything included (a fresh process: imports, data, population, campaigns, gate, cache), of
    the Laplace engine and, up to ``nuts_up_to`` campaigns, NUTS in the same run: *cold* on an empty compile
    cache, *warm* the same command again (other data of the same shape for NUTS's compiled samplers to
    reuse).  Above 20 campaigns on a LocalCluster of ``workers``."""
    from .. import sim

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in sizes:
            world = sim.make_world(campaigns=n, seed=seed)
            paths = []
            for k in range(2):  # the cold run's data and the warm run's (other draws of the same world)
                path = tmp / f"w{n}_{k}.csv"
                sim.log_history(world, days=56, seed=seed + 1 + k).to_csv(path, index=False)
                paths.append(path)
            extra = ["--workers", str(workers)] if n > 20 else []
            for engine in ("laplace", "nuts") if n <= nuts_up_to else ("laplace",):
                compiledir = tmp / f"compile_{n}_{engine}"
                cold = _timed_fit(paths[0], tmp / "m_cold", engine, str(compiledir), extra)
                warm = _timed_fit(paths[1], tmp / "m_warm", engine, str(compiledir), extra)
                if "error" in cold or "error" in warm:
                    rows.append({"campaigns": n, "engine": engine, "error": cold.get("error") or warm.get("error")})
                    continue
                settings = warm["manifest"]["settings"]
                core = (sum(settings["laplace"]["seconds"]) + settings["laplace"].get("population_seconds", 0.0)
                        if engine == "laplace" else float("nan"))
                rows.append({"campaigns": n, "engine": engine, "workers": workers if extra else 1,
                             "cold wall s": round(cold["wall"], 1), "warm wall s": round(warm["wall"], 1),
                             "warm fit s": round(warm["fit"], 1),
                             "core-s per campaign (blocks + population)": round(core / n, 3),
                             "gate": "pass" if warm["passed"] else "FAIL", "fallback": warm["fallback"]})
                print(rows[-1], flush=True)
                lines = _header("Fit speed by engine, everything included") + [
                    f"`gaelp-bayes fit` in a fresh process per run: simulated campaigns x 8 weeks (world seed {seed}). "
                    "*cold*: an empty compile cache (the Laplace engine compiles nothing; NUTS compiles its "
                    "samplers); *warm*: the same command on other data of the same shape with the cache the cold run "
                    f"left. *wall*: the whole process (Python start, imports, data, fit, cache). Above 20 campaigns "
                    f"the fit runs on a LocalCluster of {workers} workers (its start included).", "",
                    _markdown(pd.DataFrame(rows).set_index("campaigns"))]
                _write("engines_speed", lines)


def main(argv: list[str]) -> None:
    """``gaelp-bayes bench engines WHAT`` (module doc)."""
    import argparse

    p = argparse.ArgumentParser(prog="gaelp-bayes bench engines")
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("agreement")
    c = sub.add_parser("calibration")
    c.add_argument("--sizes", default="200,2000", type=whole_numbers)
    sub.add_parser("sbc").add_argument("--replications", type=int, default=300)
    sub.add_parser("gate")
    s = sub.add_parser("speed")
    s.add_argument("--sizes", default="1,20,200,2000", type=whole_numbers)
    args = p.parse_args(argv)
    if args.what == "agreement":
        bench_agreement()
    elif args.what == "calibration":
        bench_calibration(tuple(args.sizes))
    elif args.what == "sbc":
        bench_sbc(args.replications)
    elif args.what == "gate":
        bench_gate()
    else:
        bench_speed(tuple(args.sizes))
