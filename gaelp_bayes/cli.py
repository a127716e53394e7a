"""The ``gaelp-bayes`` command line.  Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


from . import cache
from .errors import GaelpError, InputError, UsageError
from .fit_summary import print_fit_summary, summary_slots
from .outputs import atomic_file, check_output


SIMULATION_MARK = ".gaelp_simulation"  # marks a folder as simulate's own: it may write there again


def cmd_fit(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from . import data
    from .model import DEFAULT
    from .pipeline import fit_cached

    sharded = sharding(args)
    check_output(args.out, inputs=[args.windows], folder=True, overwrite=args.overwrite)
    windows = data.load_windows(args.windows, timezone=args.timezone)
    delays = None
    if "observed_until" in windows:  # censored: the delay sample beside the windows, or the one given
        source = args.conversion_delay or data.delay_file(args.windows)
        if not Path(source).exists():
            raise InputError(f"{args.windows}: column 'observed_until': no delay sample at {source} "
                             "(written by `gaelp-bayes windows --conversion-time`; or pass --conversion-delay FILE)")
        delays = data.read_delays(source)
    elif args.conversion_delay:
        raise UsageError("--conversion-delay: the windows have no observed_until column (nothing censored)")
    cells = data.aggregate(windows, timezone=args.timezone, delays=delays, name=args.windows)
    print(f"{args.windows}: {len(windows)} windows, {len(cells.campaigns)} campaigns, {len(cells.clicks)} cells",
          file=sys.stderr)
    fitted = fit_cached(cells, args.out, overwrite=args.overwrite, runtime_draws=args.runtime_draws,
                        sharding=sharded, **sampling(args), seed=args.seed, sampler=args.sampler,
                        progress=not args.quiet, conversion_delay=delays,
                        config=replace(DEFAULT, engine=args.engine, drift=not args.no_drift)).fit
    manifest = cache.read_manifest(args.out)
    _, arrays = cache.read_runtime(args.out, campaigns=summary_slots(len(manifest["campaigns"])), manifest=manifest)
    print_fit_summary(args.out, manifest, arrays)
    failed = cache.failed_parts(manifest)
    if failed:
        print(f"\nWARNING: FIT FAILED THE DIAGNOSTICS GATE in {cache.parts_phrase(failed)}: "
              f"{'; '.join(fitted.diagnostics.failures)}.\n"
              f"It is cached at {args.out} with each part's verdict. {cache.consumers_left(failed)} "
              "--strict refuses any failed part; --force uses it anyway. Try more --tune/--draws.", file=sys.stderr)
        return 4
    return 0



def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    check_output(args.out, inputs=[args.model, args.windows], overwrite=args.overwrite)
    out, warnings = predict(args.model, args.windows, interval=args.interval, force=args.force,
                            strict=args.strict)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    with atomic_file(args.out) as tmp:
        if str(args.out).lower().endswith((".parquet", ".pq")):
            out.to_parquet(tmp, index=False)
        else:
            out.to_csv(tmp, index=False)
    print(f"wrote {len(out)} predictions to {args.out}")
    return 0


def cmd_windows(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data import delay_file, read_table, windows_from_events

    check_output(args.out, inputs=args.raw, overwrite=args.overwrite)
    if args.conversion_time:
        check_output(delay_file(args.out), inputs=args.raw, overwrite=args.overwrite)
    elif args.as_of:
        raise UsageError("--as-of needs --conversion-time (when each conversion was reported)")
    seen: dict[Path, str] = {}
    for path in args.raw:  # a file twice, or two files one campaign's name, would count its events twice
        key = Path(path).resolve()
        if key in seen:
            raise UsageError(f"{path}: given twice (as {seen[key]!r} and {path!r}): its events would count twice")
        seen[key] = path
    stems = [Path(p).stem for p in args.raw]
    if args.group is None and len(args.raw) > 1 and len(set(stems)) < len(stems):
        twin = next(s for s in stems if stems.count(s) > 1)
        raise UsageError(f"two files are named {twin!r} ({', '.join(p for p in args.raw if Path(p).stem == twin)}): "
                         "without --group each file's name is its campaign, and they would merge into one; "
                         "rename one or pass --group")
    frames, delays = [], []
    for path in args.raw:
        events = read_table(path)
        if args.group is None and len(args.raw) > 1:
            events = events.assign(_campaign=Path(path).stem)
        gaps: list[str] = []
        frames.append(windows_from_events(events, args.time, args.outcome,
                                          group=args.group or ("_campaign" if len(args.raw) > 1 else None),
                                          cost=args.cost, revenue=args.revenue, source_tz=args.source_tz, name=path,
                                          gaps=gaps, conversion_time=args.conversion_time, as_of=args.as_of,
                                          delays=delays))
        for gap in gaps:
            print(f"warning: {gap}", file=sys.stderr)
    windows = pd.concat(frames, ignore_index=True)
    summed = {c: "min" if c == "observed_until" else "sum" for c in windows.columns if c not in ("timestamp", "campaign")}
    windows = windows.groupby(["timestamp", "campaign"], as_index=False, sort=True).agg(summed)
    if args.conversion_time and not delays:
        raise InputError(f"{', '.join(args.raw)}: no conversion reported in the earlier half of the log: no delay "
                         "sample to learn the conversion delay from")
    with atomic_file(args.out) as tmp:
        windows.to_csv(tmp, index=False)
    if args.conversion_time:
        with atomic_file(delay_file(args.out)) as tmp:
            pd.DataFrame({"delay_seconds": delays}).to_csv(tmp, index=False)
    print(f"wrote {len(windows)} windows ({windows['campaign'].nunique()} campaigns, {windows['clicks'].sum()} "
          f"trials, {windows['conversions'].sum()} conversions) to {args.out}"
          + (f", and {len(delays)} conversion delays to {delay_file(args.out)}" if args.conversion_time else ""))
    return 0


def cmd_allocate(args: argparse.Namespace) -> int:
    import json

    from .allocate import allocate, allocate_account

    if args.account:
        ignored = [flag for flag, value, default in (
            ("--campaign", args.campaign, None), ("--target-cpa", args.target_cpa, None), ("--risk", args.risk, "mean"),
            ("--exploration", args.exploration, 0.0), ("--clicks-as-cost", args.clicks_as_cost, False))
            if value != default]
        if args.objective == "cpa" or ignored:
            raise UsageError(f"allocate --account: {ignored[0] if ignored else '--objective cpa'} is for one "
                             "campaign's plan, not the account's (objectives conversions and revenue)")
        plan = allocate_account(args.model, args.budget, date=args.date, min_campaign=args.min_campaign,
                                max_campaign=args.max_campaign, objective=args.objective,
                                min_per_hour=args.min_per_hour, max_per_hour=args.max_per_hour,
                                max_share=args.max_share, headroom=args.headroom, tolerance=args.tolerance,
                                force=args.force, strict=args.strict)
        print(json.dumps(plan.to_json(), indent=2) if args.json else plan.table())
        return 0
    if args.min_campaign or args.max_campaign is not None:
        raise UsageError("allocate: --min-campaign and --max-campaign limit the campaigns of an --account plan")
    plan = allocate(args.model, args.budget, date=args.date, campaign=args.campaign,
                    clicks_as_cost=args.clicks_as_cost, force=args.force, strict=args.strict,
                    objective=args.objective,
                    target_cpa=args.target_cpa, risk=args.risk, min_per_hour=args.min_per_hour,
                    max_per_hour=args.max_per_hour, max_share=args.max_share, headroom=args.headroom,
                    exploration=args.exploration, tolerance=args.tolerance)
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.table())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    from .report import figure_folder

    out = build_report(args.model, out=args.out, budget=args.budget, date=args.date, campaign=args.campaign,
                       overwrite=args.overwrite)
    print(f"wrote {out} (figures in {figure_folder(out)}/)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on built-in data (see ``gaelp_bayes.demo``)."""
    from . import demo

    return demo.run(**sampling(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Fit a posterior on simulated history, then pace test days bid by bid with each policy per scenario."""
    import json

    import pandas as pd

    from . import data, sim
    from .pipeline import fit_cached
    from .report import simulation_figures

    scenarios = args.scenario.split(",")
    known = (*sim.SCENARIOS, "account")
    unknown = [s for s in scenarios if s not in known]
    if unknown:
        raise UsageError(f"--scenario: unknown scenario {unknown[0]!r} (one of {', '.join(known)})")
    policies = tuple(args.policies.split(","))
    unknown = [p for p in policies if p not in sim.POLICIES + sim.MORE_POLICIES]
    if unknown:
        raise UsageError(f"--policies: unknown policy {unknown[0]!r} (one of "
                         f"{', '.join(sim.POLICIES + sim.MORE_POLICIES)})")
    sharded = sharding(args)
    out_dir = check_output(args.out, folder=True, overwrite=args.overwrite, mark=SIMULATION_MARK)
    world = sim.make_world(campaigns=args.campaigns, seed=args.seed, volume_scale=args.volume_scale)
    history = sim.log_auction_history(world, days=args.history_days, seed=args.seed + 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SIMULATION_MARK).write_text("results of gaelp-bayes simulate; its model caches are reused when "
                                           "the data and model version match, the rest rewritten\n")
    results, lines = [], [f"# Simulation: {args.campaigns} campaigns, {args.history_days} days of history, "
                          f"{args.days} test days, seed {args.seed}", ""]
    for scenario in scenarios:
        if scenario == "account":  # one budget over ten campaigns or more: its own world, fit and policies
            res = account_scenario(args, out_dir, sharded)
            results.append(res)
            n = res.attrs.get("campaigns", "")
            lines += [f"## account ({n} campaigns, one budget)", "", sim.summarize_account(res).to_string(), ""]
            continue
        spec = sim.SCENARIOS[scenario]
        world_s, hist = world, history
        if "world" in spec:  # another market: its own world, history and fit
            world_s = sim.make_world(campaigns=args.campaigns, seed=args.seed, volume_scale=args.volume_scale,
                                     **spec["world"])
            hist = sim.log_auction_history(world_s, days=args.history_days, seed=args.seed + 1)
        if scenario == "new-campaign":  # the last campaign keeps only its last 2 days of history
            stamps = pd.to_datetime(history["timestamp"], utc=True)
            young = (history["campaign"] == world.campaigns[-1]) & (stamps < stamps.max() - pd.Timedelta(days=2))
            hist = history[~young].reset_index(drop=True)
        model_dir = out_dir / f"model-{scenario if scenario == 'new-campaign' or 'world' in spec else 'history'}"
        cells = data.aggregate(data.load_windows(hist))
        print(f"posterior on {len(hist)} simulated windows: {model_dir} (fitted unless cached) ...",
              file=sys.stderr, flush=True)
        fit_cached(cells, model_dir, reuse=True, progress=False, seed=args.seed, sharding=sharded, engine=args.engine)
        start = pd.to_datetime(history["timestamp"], utc=True).max().normalize() + pd.Timedelta(days=1)
        days = [str((start + pd.Timedelta(days=i)).date()) for i in range(args.days)]
        print(f"scenario {scenario}: pacing {len(days)} days x {args.campaigns} campaigns ...", file=sys.stderr)
        res = sim.compare_policies(world_s, hist, str(model_dir), days, budget_share=args.budget_share,
                                   policies=policies, seed=args.seed + 7, day_kwargs=spec.get("day"),
                                   replay_kwargs=spec.get("replay"), pacer_kwargs=spec.get("pacer"))
        res.insert(0, "scenario", scenario)
        results.append(res)
        table = sim.summarize(res)
        trace = sim.trace_day(world_s, hist, str(model_dir), 0, days[0], policies, seed=args.seed + 7,
                              budget_share=args.budget_share, day_kwargs=spec.get("day"),
                              replay_kwargs=spec.get("replay"), pacer_kwargs=spec.get("pacer"))
        figures = simulation_figures(trace, out_dir, scenario)
        lines += [f"## {scenario}", "", table.to_string(), "",
                  "Figures (first campaign, first test day): " + ", ".join(f"`{p.name}`" for p in figures), ""]
    all_results = pd.concat(results, ignore_index=True)
    all_results.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    if args.json:
        summary = {s: (sim.summarize_account(g) if s == "account" else sim.summarize(g)).reset_index()
                   .to_dict(orient="records") for s, g in all_results.groupby("scenario", sort=False)}
        print(json.dumps(summary, indent=2, default=float))
    else:
        print("\n".join(lines))
    print(f"wrote {out_dir}/summary.md and results.csv", file=sys.stderr)
    return 0


def account_scenario(args: argparse.Namespace, out_dir: Path, sharded):
    """``simulate --scenario account``: max(10, --campaigns) campaigns of different value, volume and hours,
    the first converting at twice its rate from 12:00 to 18:00 of every test day; one budget
    (``--budget-share`` of the account's usual spend) paced by ``sim.ACCOUNT_POLICIES``."""
    import pandas as pd

    from . import data, sim
    from .pipeline import fit_cached

    world = sim.make_world(campaigns=max(10, args.campaigns), seed=args.seed, volume_scale=args.volume_scale)
    history = sim.log_auction_history(world, days=args.history_days, seed=args.seed + 1)
    model_dir = out_dir / "model-account"
    print(f"posterior on {len(history)} simulated windows: {model_dir} (fitted unless cached) ...", file=sys.stderr)
    fit_cached(data.aggregate(data.load_windows(history)), model_dir, reuse=True, progress=False, seed=args.seed,
               sharding=sharded, engine=args.engine)
    start = pd.to_datetime(history["timestamp"], utc=True).max().normalize() + pd.Timedelta(days=1)
    days = [str((start + pd.Timedelta(days=i)).date()) for i in range(args.days)]
    print(f"scenario account: pacing {len(days)} days x {len(world.campaigns)} campaigns on one budget ...",
          file=sys.stderr)
    res = sim.compare_account_policies(world, history, str(model_dir), days, budget_share=args.budget_share,
                                       seed=args.seed + 7, moving=(0, 12, 18, 2.0))
    res.insert(0, "scenario", "account")
    res.attrs["campaigns"] = len(world.campaigns)
    return res


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: PROG: argument --budget: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def number(rule: str, test, cast=float):
    """An option type: ``cast`` of the text, finite and passing ``test``, else a message with the rule."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value
    return parse


POSITIVE = number("a finite number > 0", lambda v: v > 0)
OPEN_SHARE = number("a number in (0, 1)", lambda v: 0 < v < 1)
COUNT = number("a whole number >= 1", lambda v: v >= 1, int)
SEED = number("a whole number >= 0", lambda v: v >= 0, int)


def allocation_option(name: str):
    """The option type of an allocation setting: the rule ``allocate.check_options`` applies to it."""
    from .allocate import OPTION_RULES

    test, words, _ = OPTION_RULES[name]
    return number(words, test)


def overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (never an input, nor a folder holding one)")


def sampling_options(parser: argparse.ArgumentParser) -> None:
    """NUTS settings per model part; unset, the model's defaults apply (``gaelp_bayes/model/config.py``:
    4 chains x 500 tuning steps + 1000 draws)."""
    parser.add_argument("--draws", type=COUNT, help="NUTS draws per chain (default 1000)")
    parser.add_argument("--tune", type=COUNT, help="NUTS tuning steps per chain (default 500)")
    parser.add_argument("--chains", type=COUNT, help="NUTS chains (default 4)")


def sampling(args: argparse.Namespace) -> dict:
    """The NUTS settings given on the command line (the model's defaults fill the rest)."""
    return {name: getattr(args, name) for name in ("draws", "tune", "chains") if getattr(args, name) is not None}


def engine_option(parser: argparse.ArgumentParser) -> None:
    """The inference engine (``model/engines.py``)."""
    parser.add_argument("--engine", choices=["auto", "laplace", "nuts"], default="auto",
                        help="laplace: each campaign by Laplace + importance sampling under its population, NUTS "
                        "for the campaigns whose weights fail the gate; nuts: NUTS throughout (the reference); "
                        "auto (default): laplace, and nuts where a population fails its own gate")


def sharding_options(parser: argparse.ArgumentParser) -> None:
    """A sharded fit (``model/sharded.py``) for many campaigns, on Dask or in this process."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=COUNT, help="a sharded fit on a Dask LocalCluster of this many worker "
                       "processes started here")
    where.add_argument("--scheduler", metavar="tcp://HOST:8786", help="a sharded fit on an existing Dask cluster")
    parser.add_argument("--shard-size", type=COUNT, help="campaigns per shard of a sharded fit (default 24); "
                        "alone, the shards run one after another in this process")
    parser.add_argument("--population-size", type=number("a whole number >= 2", lambda v: v >= 2, int),
                        help="campaigns in a sharded fit's population fit (default 24)")


def sharding(args: argparse.Namespace) -> dict | None:
    """The sharded fit's options given, or None: a joint fit."""
    given = {name: getattr(args, name) for name in ("workers", "scheduler", "shard_size", "population_size")
             if getattr(args, name) is not None}
    if given and set(given) == {"population_size"}:
        raise UsageError("--population-size needs --workers, --scheduler or --shard-size (a sharded fit)")
    return given or None


def strict_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true",
                        help="refuse a fit with any part that failed its diagnostics gate (by default only the "
                             "parts this command uses count)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = Parser(prog="gaelp-bayes", description="Bayesian forecasting engine for ad budget pacing")
    p.add_argument("--version", action="version", version=f"gaelp-bayes {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="main job on built-in data")
    sampling_options(d)
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser("fit", help="fit a posterior to performance windows and cache it")
    f.add_argument("windows", help="CSV or Parquet of performance windows")
    f.add_argument("--out", required=True, help="cache folder, e.g. models/NAME (new, empty, or with --overwrite)")
    overwrite_option(f)
    sampling_options(f)
    f.add_argument("--seed", type=SEED, default=0)
    f.add_argument("--timezone", default="UTC", help="account timezone for hours and days (IANA name)")
    engine_option(f)
    f.add_argument("--sampler", choices=["auto", "pymc", "nutpie"], default="auto", help="NUTS sampler")
    f.add_argument("--runtime-draws", type=COUNT, default=1000, help="draws kept in the runtime file")
    f.add_argument("--conversion-delay", help="delay sample file (column delay_seconds) for windows with "
                   "observed_until (default: WINDOWS.delays.csv beside them)")
    f.add_argument("--no-drift", action="store_true", help="treat every week of the data alike (no trend or "
                   "random walk of the conversion level over the weeks; the model before version 14)")
    sharding_options(f)
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fit)

    r = sub.add_parser("predict", help="predicted conversions per window from a cached posterior")
    r.add_argument("model", help="cache folder, e.g. models/NAME")
    r.add_argument("windows", help="CSV or Parquet with timestamp, clicks (and campaign)")
    r.add_argument("--out", required=True, help="output CSV (or .parquet)")
    overwrite_option(r)
    r.add_argument("--interval", type=OPEN_SHARE, default=0.9)
    r.add_argument("--force", action="store_true", help="use a cache whose fit failed its diagnostics")
    strict_option(r)
    r.set_defaults(func=cmd_predict)

    w = sub.add_parser("windows", help="aggregate raw event logs (one row per trial) into hourly windows")
    w.add_argument("raw", nargs="+", help="CSV or Parquet event logs; with several files and no --group, "
                   "each file's name is its campaign")
    w.add_argument("--time", required=True, help="event time column (ISO-8601)")
    w.add_argument("--outcome", required=True, help="0/1 outcome column (becomes conversions)")
    w.add_argument("--group", help="campaign column")
    w.add_argument("--cost", help="cost column (summed into spend)")
    w.add_argument("--revenue", help="revenue column")
    w.add_argument("--source-tz", default="UTC", help="timezone of times without an offset")
    w.add_argument("--conversion-time", help="column of when each conversion was reported (blank for none): the "
                   "windows get observed_until, and the delay sample is written beside them (OUT.delays.csv)")
    w.add_argument("--as-of", help="read the log as exported at this ISO-8601 time (default: its latest time)")
    w.add_argument("--out", required=True, help="windows CSV to write")
    overwrite_option(w)
    w.set_defaults(func=cmd_windows)

    rp = sub.add_parser("report", help="uncertainty report (HTML + figures) of a cached posterior")
    rp.add_argument("model", help="cache folder, e.g. models/NAME")
    rp.add_argument("--out", help="HTML file (default reports/NAME.html; figures go to reports/NAME_figures/)")
    overwrite_option(rp)
    rp.add_argument("--budget", type=allocation_option("budget"),
                    help="daily budget to allocate (default: half the usual daily spend)")
    rp.add_argument("--date", help="YYYY-MM-DD of the planned day (default: today in the account timezone)")
    rp.add_argument("--campaign", help="campaign for the allocation (default: the first)")
    rp.set_defaults(func=cmd_report)

    s = sub.add_parser("simulate", help="policy benchmark in a simulated auction world")
    s.add_argument("--days", type=COUNT, default=7, help="test days paced bid by bid")
    s.add_argument("--campaigns", type=COUNT, default=3)
    s.add_argument("--history-days", type=COUNT, default=35)
    s.add_argument("--budget-share", type=POSITIVE, default=0.5, help="budget = this x usual daily spend")
    s.add_argument("--volume-scale", type=POSITIVE, default=10.0, help="traffic multiplier of the world")
    s.add_argument("--policies", default="oracle,even,legacy,dual,plugin,bayes,bayes-static,bayes-pi,bayes-dg",
                   help="dual: a plain dual-multiplier pacer on empirical rates; bayes-static: the bayes pacer "
                   "with online learning off; bayes-pi, bayes-dg: the bayes pacer with a PI controller on the "
                   "plan's curve, or a dual-gradient one (Balseiro & Gur), instead of its re-solving controller; "
                   "truth, truth-uncapped: the bayes pacer given "
                   "the world's true rates, costs and volumes (learning off), under its caps and without them")
    s.add_argument("--scenario", default="stationary",
                   help="comma-separated: stationary, shift, price-spike, outage, no-loss-notices, price-spread, "
                   "narrow-prices, new-campaign, delayed-postbacks, cheap-busy, dear-thin, prices-fall, prices-rise, "
                   "mid-day-start; account: one budget over ten campaigns (its own policies: fixed splits by past "
                   "spend and by the account plan, the account pacer, the oracle)")
    s.add_argument("--seed", type=SEED, default=0)
    engine_option(s)
    s.add_argument("--out", default="reports/simulation")
    overwrite_option(s)
    sharding_options(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)

    b = sub.add_parser("bench", help="speed and quality benchmarks; writes reports/benchmarks.md",
                       add_help=False)
    b.add_argument("bench_args", nargs=argparse.REMAINDER,
                   help="fit | calibration | allocation | allocation-speed | runtime | pacing | scenarios | "
                        "open-bandit | events | sparse | index | all (see gaelp-bayes bench --help)")

    a = sub.add_parser("allocate", help="split a daily budget over 24 hours from a cached posterior")
    a.add_argument("model", help="cache folder, e.g. models/NAME")
    a.add_argument("--budget", type=allocation_option("budget"), required=True,
                   help="daily budget (money; clicks with --clicks-as-cost)")
    a.add_argument("--date", help="YYYY-MM-DD in the account timezone (default: today)")
    a.add_argument("--campaign", help="campaign to plan (required when the model has several)")
    a.add_argument("--account", action="store_true",
                   help="one budget over every campaign of the model x 24 hours (objectives conversions, revenue)")
    a.add_argument("--min-campaign", type=allocation_option("min_per_hour"), default=0.0,
                   help="with --account: the least each campaign gets (money)")
    a.add_argument("--max-campaign", type=allocation_option("max_per_hour"),
                   help="with --account: the most each campaign gets (money)")
    a.add_argument("--objective", choices=["conversions", "revenue", "cpa"], default="conversions")
    a.add_argument("--target-cpa", type=allocation_option("target_cpa"),
                   help="target cost per acquisition (objective cpa)")
    a.add_argument("--risk", choices=["mean", "cvar"], default="mean",
                   help="mean: maximise expected value; cvar: maximise the mean of the worst 10%% of draws")
    a.add_argument("--min-per-hour", type=allocation_option("min_per_hour"), default=0.0)
    a.add_argument("--max-per-hour", type=allocation_option("max_per_hour"))
    a.add_argument("--max-share", type=allocation_option("max_share"), default=0.2,
                   help="max share of the day per hour (default 0.2)")
    a.add_argument("--headroom", type=allocation_option("headroom"), default=1.5,
                   help="hour capacity = historical spend rate x this")
    a.add_argument("--exploration", type=allocation_option("exploration"), default=0.0,
                   help="share of the budget kept for exploration")
    a.add_argument("--tolerance", type=allocation_option("tolerance"), default=0.95,
                   help="confidence: P(plan >= this x draw's optimum)")
    a.add_argument("--clicks-as-cost", action="store_true", help="no spend data: budget counts clicks")
    a.add_argument("--force", action="store_true", help="use a cache whose fit failed its diagnostics")
    strict_option(a)
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=cmd_allocate)
    return p


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's message (else its type): errors are one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark runner has its own options (gaelp-bayes bench --help)
        from . import bench

        return bench.main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a bad option (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return args.func(args)
    except GaelpError as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, OSError) as exc:  # unexpected values, unwritable paths: still one line
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
