"""Benchmarks: each prints a Markdown table and writes it under reports/benchmarks/; every run also
rebuilds reports/benchmarks.md, the index of all tables (machine, versions, each figure beside its
baseline from the same run).

    gaelp-bayes bench fit            # fit time, cold vs warm compile, 1/20/200 campaigns
    gaelp-bayes bench calibration    # held-out coverage and RMSE on a larger simulated case
    gaelp-bayes bench allocation     # plan quality vs truth and confidence calibration
    gaelp-bayes bench runtime        # per-bid time, batch throughput, import time, memory
    gaelp-bayes bench pacing         # policies vs a hindsight oracle, rich and sparse history
    gaelp-bayes bench scenarios      # every simulate scenario, 3 campaigns x 7 days, with/without learning
    gaelp-bayes bench account        # one budget over ten campaigns: the account pacer beside fixed splits
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
import platform
import sys
from pathlib import Path

from ..errors import GaelpError
from .accuracy import (OPEN_BANDIT, bench_allocation, bench_calibration, bench_delay, bench_drift,
                       bench_open_bandit)
from .common import OUT_DIR, _header, whole_numbers
from .fitting import (ROBUSTNESS_SEEDS, SLOW_SHAPES, bench_fit, bench_robustness, bench_scale, bench_shard_cost,
                      bench_sparse)
from .pacing import ACCOUNT_SEEDS, bench_account, bench_pacing, bench_scenarios
from .speed import bench_allocation_speed, bench_cache, bench_events, bench_fleet, bench_runtime

INDEX_ORDER = ("robustness", "pacing", "scenarios", "account", "delay", "drift", "fleet", "calibration", "open_bandit", "allocation",
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
    ac = sub.add_parser("account", help="one budget over ten campaigns: the account pacer beside fixed splits")
    ac.add_argument("--seeds", default=",".join(map(str, ACCOUNT_SEEDS)), type=whole_numbers, help="world seeds")
    ac.add_argument("--days", type=int, default=3)
    ac.add_argument("--engine", **engine_choice)
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
    argv = sys.argv[1:] if argv is None else argv
    # ``engines`` has its own parser: everything after it is its (``--help`` too)
    args = argparse.Namespace(what="engines", rest=argv[1:]) if argv[:1] == ["engines"] else p.parse_args(argv)
    try:
        run(args)
    except GaelpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    write_index()
    return 0


def _robustness(args: argparse.Namespace) -> None:
    from ..battery import SHAPES

    bench_robustness(list(SHAPES) if args.shapes == "all" else args.shapes.split(","), args.seeds, args.slow_seeds,
                     args.baseline)


def _engines(args: argparse.Namespace) -> None:
    from . import engines

    engines.main(args.rest)


def _all(args: argparse.Namespace) -> None:
    """Every benchmark with its defaults (``make bench``)."""
    bench_runtime("models/demo", "campaign_01")
    bench_allocation_speed()
    bench_calibration(10, 21)
    bench_open_bandit()
    bench_events()
    bench_sparse()
    bench_allocation(10, 500)
    bench_pacing(["rich", "sparse"])
    bench_scenarios()
    bench_account()
    bench_delay()
    bench_drift()
    bench_fleet()
    bench_fit([1, 20, 200], ["auto"])


# each subcommand of ``gaelp-bayes bench``: what it runs on its parsed arguments
BENCHMARKS = {
    "index": lambda a: None,
    "all": _all,
    "engines": _engines,
    "robustness": _robustness,
    "fit": lambda a: bench_fit(a.sizes, a.samplers.split(","), a.baseline),
    "calibration": lambda a: bench_calibration(a.campaigns, a.seed, engine=a.engine),
    "allocation": lambda a: bench_allocation(a.datasets, a.draws),
    "allocation-speed": lambda a: bench_allocation_speed(),
    "open-bandit": lambda a: bench_open_bandit(a.root),
    "events": lambda a: bench_events(),
    "sparse": lambda a: bench_sparse(),
    "runtime": lambda a: bench_runtime(a.model, a.campaign),
    "pacing": lambda a: bench_pacing(a.regimes.split(","), a.draws, engine=a.engine),
    "scenarios": lambda a: bench_scenarios(a.seed, a.days, engine=a.engine),
    "account": lambda a: bench_account(tuple(a.seeds), a.days, engine=a.engine),
    "cache": lambda a: bench_cache(a.sizes),
    "delay": lambda a: bench_delay(seeds=tuple(a.seeds), engine=a.engine),
    "drift": lambda a: bench_drift(seeds=tuple(a.seeds), engine=a.engine),
    "shard-cost": lambda a: bench_shard_cost(),
    "scale": lambda a: bench_scale(a.sizes, a.workers, a.joint_up_to, a.seed, a.same_base_rate),
    "fleet": lambda a: bench_fleet(a.seed, outage_seconds=a.outage_seconds),
}


def run(args: argparse.Namespace) -> None:
    """The benchmark ``args.what`` (each writes its table under reports/benchmarks/)."""
    BENCHMARKS[args.what](args)
