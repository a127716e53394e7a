"""The inference engines, behind one ``fit``: Laplace + importance sampling per campaign, or NUTS.

- ``laplace`` (``model/laplace/``): each part's population by nested Laplace on its member campaigns, every
  campaign given it by Laplace + Pareto-smoothed importance sampling, NUTS for the campaigns whose
  importance weights fail the gate (under the same population).  Numpy only: nothing is compiled unless a
  campaign falls back to NUTS.
- ``nuts``: every part sampled with NUTS (``fitting.fit``; ``sharded.fit_sharded`` for a sharded fit), the
  reference.
- ``auto`` (the default): ``laplace``, and ``nuts`` for the whole fit where a part's population fails its
  own gate (the importance weights of its hyperparameters), which the per-campaign fallback cannot mend.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from ..data import Cells
from .config import DEFAULT, ENGINES, POPULATION_SIZE, ModelConfig


def population_failed(fitted) -> list[str]:
    """The parts of a Laplace fit whose population failed its gate (``PartVerdict.population_failures``)."""
    return [part for part, verdict in fitted.verdicts.items() if verdict.population_failures]


def fit(cells: Cells, engine: str | None = None, config: ModelConfig = DEFAULT, seed: int = 0, progress: bool = True,
        runner=None, population_size: int = POPULATION_SIZE, block_size: int | None = None, nuts=None,
        spill=None, laplace_options: dict | None = None, **nuts_options):
    """Fit ``cells`` with ``engine`` (default: ``config.engine``).  ``nuts_options`` (draws, tune, chains,
    sampler, ...) go to NUTS, for the ``nuts`` engine and for the Laplace engine's fallbacks; ``runner``,
    ``population_size``, ``block_size``, ``spill`` and ``laplace_options`` (``laplace.fit``'s options) to the
    Laplace engine; ``nuts``: what fits the whole data with NUTS (default: ``fitting.fit``)."""
    from . import fitting
    from .laplace import fit as laplace

    engine = engine or config.engine
    if engine not in ENGINES:
        from ..errors import UsageError

        raise UsageError(f"--engine: unknown engine {engine!r} (one of {', '.join(ENGINES)})")
    config = replace(config, engine=engine)
    whole = nuts or (lambda: fitting.fit(cells, seed=seed, progress=progress, config=config, **nuts_options))
    if engine == "nuts":
        return whole()
    fitted = laplace.fit(cells, config, seed=seed, progress=progress, runner=runner, population_size=population_size,
                         nuts_options=nuts_options, spill=spill,
                         **{**(laplace_options or {}), **({"block_size": block_size} if block_size else {})})
    failed = population_failed(fitted)
    if engine == "auto" and failed:
        if progress:
            print(f"the population of the {', '.join(failed)} part(s) failed its gate "
                  f"({'; '.join(f for p in failed for f in fitted.verdicts[p].population_failures)}): fitting with NUTS",
                  file=sys.stderr, flush=True)
        nuts_fit = whole()
        nuts_fit.settings["engine"] = "nuts"
        nuts_fit.settings["auto"] = {"laplace_population_failed": failed,
                                     "laplace_seconds": round(fitted.seconds, 2)}
        return nuts_fit
    return fitted
