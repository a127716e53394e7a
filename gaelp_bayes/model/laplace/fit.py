"""A fit by the Laplace engine: every part's population, then every campaign given it, NUTS where the gate says.

1. **Population** per part (``engine.population``) on the member campaigns: all of them up to
   ``population_size``, else a stratified subsample (``sharded.choose_population``).
2. **Campaigns** (``engine.campaigns``), in blocks of ``block_size`` (each a task of a ``cluster`` runner:
   here, or on Dask workers), every part at once; each block's posterior comes back as a Dataset.
3. **Gate** per campaign over its parts (``engine.CampaignDraws.passed``).  A campaign that fails is fitted
   again with NUTS (``fitting.fit``) under the same population: the conversion part's population as a
   ``PopulationPrior`` (for a member campaign, its own data taken out of the population first, by
   reweighting the population draws by 1 / its marginal likelihood), the other parts on their own.  Those
   campaigns' draws and verdicts come from NUTS; the manifest names them.

The result (``LaplaceFit``) writes the same cache as a NUTS fit (``cache.write``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data import Cells
from ..config import DEFAULT, POPULATION_SIZE, ModelConfig
from ..revenue import known_value_per_conversion
from . import conversion as lconv
from . import engine, money, volume
from .psis import khat_threshold

# draws kept per campaign, importance draws per campaign, population draws, campaigns per block (a task), and
# whether the campaigns are fitted under the population's posterior mean instead of its draws (to measure
# what carrying its uncertainty is worth)
EXPORT_CAMPAIGNS = 50  # campaigns exported to the runtime's arrays at a time

ENGINE_DEFAULTS = {"draws": 1000, "proposals": 2000, "population_draws": 100, "block_size": 200,
                   "point_population": False}


def latent_model(part: str, cells: Cells, config: ModelConfig) -> engine.LatentModel:
    """The ``LatentModel`` of one part for ``cells``."""
    if part == "conversion":
        data = lconv.conversion_data(cells, config.hour_harmonics, config.drift)
        return lconv.ConversionModel(data, len(cells.campaigns) > 1, config)
    if part == "volume":
        return volume.VolumeModel(cells, config)
    if part == "cost":
        return money.CostModel(cells, config)
    if part == "revenue":
        return money.RevenueModel(cells, config)
    raise ValueError(f"unknown model part {part!r}")


def part_variables(part: str, model, psi, shared, theta, pooled: bool, rng) -> dict:
    """The part's posterior variables ({name: (dims, [N, ...])}) as its PyMC model names them."""
    if part == "conversion":
        return lconv.posterior_variables(model, psi, shared, theta, rng)
    if part == "volume":
        return volume.posterior_variables(model, psi, shared, theta, pooled)
    if part == "cost":
        return money.cost_variables(model, psi, shared, theta, pooled)
    return money.revenue_variables(model, psi, shared, theta, pooled)


@dataclass
class Block:
    """One block of campaigns: their draws of every part's campaign variables (a Dataset over chain, draw and
    campaign, with one campaign the model's own variables too) and each part's per-campaign gate."""

    campaigns: np.ndarray  # indices into the fit's campaigns
    posterior: object  # xarray.Dataset
    draws: dict  # part -> engine.CampaignDraws (without theta)
    log_evidence: dict  # part -> [B, M]
    seconds: float

    def spill(self, path) -> "Block":
        """This block with its draws moved to the netCDF file ``path`` and read back lazily: a fit of
        thousands of campaigns keeps them on disk, not in memory."""
        import xarray as xr

        self.posterior.to_netcdf(path, engine="h5netcdf")
        self.posterior = xr.open_dataset(path, engine="h5netcdf", cache=False)
        return self

    def close(self) -> None:
        self.posterior.close()


def fit_block(models: dict, populations: dict, campaigns: np.ndarray, names: tuple[str, ...], pooled: bool,
              options: dict, seed: int, config: ModelConfig) -> Block:
    """The campaigns stage of every part for the ``campaigns`` (the task a worker runs): ``models`` hold
    those campaigns' data only (``take``), in that order; ``names`` are theirs."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    variables, draws, evidence = {}, {}, {}
    local = np.arange(len(campaigns))
    for part, model in models.items():
        pop = populations[part]
        quantities = lconv.rate_quantity(model, pop.psi, pop.shared) if part == "conversion" else None
        result = engine.campaigns(model, local, pop, options["draws"], rng, options["proposals"], quantities)
        m_of = np.arange(options["draws"]) % len(pop.psi)
        part_vars = part_variables(part, model, pop.psi[m_of], pop.shared[m_of], result.theta, pooled, rng)
        # one campaign: its level and curve are the model's mu and hour_coef (no campaign axis): kept here too
        variables.update({name: v for name, v in part_vars.items() if "campaign" in v[0] or not pooled})
        evidence[part] = result.log_evidence
        result.theta = None  # the variables hold what the cache needs
        draws[part] = result
    return Block(campaigns, _dataset(variables, names, config), draws, evidence, time.perf_counter() - start)


@dataclass
class PartVerdict:
    """A part's gate under the Laplace engine."""

    population: engine.Population
    khat: np.ndarray  # [C] per campaign
    ess: np.ndarray
    quantity_khat: np.ndarray
    conflict: np.ndarray
    passed_campaigns: np.ndarray  # [C] bool
    proposals: int
    shift: float = 0.0  # ``engine.population_shift`` of the campaigns outside the members
    fallback: list[str] = field(default_factory=list)  # campaigns fitted again with NUTS
    fallback_passed: bool = True

    @property
    def population_failures(self) -> list[str]:
        """The population's own gate (``engine.Population.failures``) and whether the campaigns outside its
        members sit together away from it (``engine.population_shift``)."""
        out = list(self.population.failures)
        if abs(self.shift) > engine.CONFLICT_Z:
            out.append(f"population: the campaigns outside its {len(self.population.members)} members sit together "
                       f"{self.shift:+.1f} sds from it (their levels): the members do not represent them")
        return out

    @property
    def failures(self) -> list[str]:
        out = self.population_failures
        if self.fallback and not self.fallback_passed:
            out.append(f"NUTS fallback of {len(self.fallback)} campaign(s) failed its gate")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        finite = lambda v: float(np.nanmax(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
        return {"passed": self.passed, "failures": self.failures, "engine": "laplace",
                "population_khat": self.population.khat, "population_ess": self.population.ess,
                "population_correction_khat": self.population.correction_khat,
                "population_correction_ess": self.population.correction_ess,
                "population_members": len(self.population.members),
                "khat_max": finite(self.khat), "khat_threshold": khat_threshold(self.proposals),
                "ess_min": float(np.nanmin(self.ess)), "quantity_khat_max": finite(self.quantity_khat),
                "campaigns_failed": int((~self.passed_campaigns).sum()), "population_shift": self.shift,
                "fallback": self.fallback,
                "fallback_rate": len(self.fallback) / len(self.khat), "proposals": self.proposals}


def _dataset(variables: dict, names: tuple[str, ...] | None, config: ModelConfig):
    """An xarray Dataset (chain 1, draw N) of {name: (dims, [N, ...])} with the PyMC models' coordinates."""
    import xarray as xr

    coords = {"chain": [0], "fourier": list(range(2 * config.hour_harmonics)),
              "fourier_cpc": list(range(2 * config.cpc_harmonics)), "dow": list(range(7)), "hour": list(range(24))}
    if names is not None:
        coords["campaign"] = list(names)
    if "level_offset" in variables:
        coords["week"] = list(range(variables["level_offset"][1].shape[-1]))
    data = {}
    for name, (dims, values) in variables.items():
        values = np.asarray(values)
        data[name] = (("chain", "draw") + dims, values[None])
    n = next(iter(data.values()))[1].shape[1]
    coords["draw"] = np.arange(n)
    used = {d for dims, _ in data.values() for d in dims}
    return xr.Dataset(data, coords={k: v for k, v in coords.items() if k in used})


@dataclass
class LaplaceFit:
    """A fit by the Laplace engine (module doc): what ``cache.write`` needs of a ``Fit``."""

    cells: Cells
    population: object  # xarray.Dataset (chain 1, draw N): every part's population values
    blocks: list[Block]
    verdicts: dict  # part -> PartVerdict (and "revenue" known: None)
    fallback: object | None  # fitting.Fit of the campaigns that failed the gate (all parts), or None
    settings: dict
    seconds: float
    config: ModelConfig = DEFAULT

    @property
    def campaigns(self) -> tuple[str, ...]:
        return self.cells.campaigns

    @property
    def failed(self) -> list[int]:
        """Campaigns (indices) that failed the gate in any part: their draws come from ``fallback``."""
        out = set()
        for verdict in self.verdicts.values():
            out |= set(np.flatnonzero(~verdict.passed_campaigns).tolist())
        return sorted(out)

    @property
    def part_diagnostics(self) -> dict:
        out = {part: verdict.as_dict() for part, verdict in self.verdicts.items()}
        if self.settings["known_value_per_conversion"] and "revenue" in self.settings["parts"]:
            out["revenue"] = {"passed": True, "failures": [], "engine": "known value",
                              "fallback": [], "campaigns_failed": 0}
        if self.fallback is not None:
            nuts = self.fallback.settings["part_diagnostics"]
            for part in out:
                out[part]["fallback_diagnostics"] = nuts.get(part)
        return out

    @property
    def diagnostics(self) -> "LaplaceDiagnostics":
        return LaplaceDiagnostics(self.part_diagnostics)

    def _block_tree(self, block: Block, keep: list[int] | None = None):
        """A DataTree of one block (population values and its campaigns' draws) as ``export`` reads it."""
        import xarray as xr

        from ..fitting import cells_dataset
        from ..sharded import subset

        post = block.posterior if keep is None else block.posterior.isel(campaign=keep)
        population = self.population.drop_vars([v for v in self.population.data_vars if v in post.data_vars])
        post = xr.merge([population, post], join="outer", combine_attrs="drop")
        return xr.DataTree.from_dict({"posterior": post, "observed_data": cells_dataset(
            subset(self.cells, [int(block.campaigns[k]) for k in (keep if keep is not None
                                                                   else range(len(block.campaigns)))]))})

    def runtime_blocks(self, max_draws: int = 1000):
        """What ``cache.write_runtime`` writes: the passing campaigns, ``EXPORT_CAMPAIGNS`` at a time (memory
        stays bounded at thousands of campaigns), a new campaign with the first, then the fallback's."""
        from ..export import runtime_arrays

        failed = set(self.failed)
        first = True
        for k, block in enumerate(self.blocks):
            keep = [j for j, c in enumerate(block.campaigns) if int(c) not in failed]
            for lo in range(0, max(len(keep), 1 if first else 0), EXPORT_CAMPAIGNS):
                chunk = keep[lo:lo + EXPORT_CAMPAIGNS]
                arrays = runtime_arrays(self._block_tree(block, chunk or None), max_draws=max_draws,
                                        seed=self.settings["seed"] + 1000 * k + lo, config=self.config)
                if not chunk:  # every campaign of the first block fell back: only its new campaign is used
                    arrays = {name: a[:, -1:] for name, a in arrays.items()}
                where = [int(block.campaigns[j]) for j in chunk] + ([len(self.cells.campaigns)] if first else [])
                first = False
                yield where, {name: a[:, :len(where)] for name, a in arrays.items()}
        if self.fallback is not None:
            slot = {name: i for i, name in enumerate(self.cells.campaigns)}
            for where, arrays in self.fallback.runtime_blocks(max_draws):
                names = [self.fallback.campaigns[i] for i in where if i < len(self.fallback.campaigns)]
                yield [slot[name] for name in names], {name: a[:, :len(names)] for name, a in arrays.items()}

    @property
    def tree(self):
        """The population's and the first block's draws in ``posterior``, every other block's under
        ``shards/shard_K/posterior`` (campaigns that fell back to NUTS left out: theirs are under
        ``fallback/``), each campaign's gate figures in ``laplace``, every campaign's cells as the observed
        data."""
        import xarray as xr

        from ..fitting import cells_dataset

        failed = set(self.failed)
        nodes = {}
        for k, block in enumerate(self.blocks):
            keep = [j for j, c in enumerate(block.campaigns) if int(c) not in failed]
            post = self._block_tree(block, keep)["posterior"].to_dataset()
            if k == 0:
                nodes["posterior"] = post
            elif keep:
                nodes[f"shards/shard_{k}/posterior"] = post[[v for v in post.data_vars if "campaign" in post[v].dims]]
        nodes["observed_data"] = cells_dataset(self.cells)
        nodes["laplace"] = self.gate_dataset()
        if self.fallback is not None:
            for group in ("posterior", "sample_stats"):
                nodes[f"fallback/{group}"] = self.fallback.tree[group].to_dataset()
        return xr.DataTree.from_dict(nodes)

    def gate_dataset(self):
        """Each campaign's gate figures per part (k-hat, ESS, the largest quantity k-hat, the conflict
        share, passed) as a Dataset over (part, campaign)."""
        import xarray as xr

        parts = list(self.verdicts)
        fields = {"khat": "khat", "ess": "ess", "quantity_khat": "quantity_khat", "conflict": "conflict"}
        data = {name: (("part", "campaign"), np.stack([getattr(self.verdicts[p], attr) for p in parts]))
                for name, attr in fields.items()}
        data["passed"] = (("part", "campaign"), np.stack([self.verdicts[p].passed_campaigns for p in parts]))
        return xr.Dataset(data, coords={"part": parts, "campaign": list(self.cells.campaigns)})

    def close(self) -> None:
        """Close the blocks' spilled draws (``fit(spill=...)``): the tree is unusable afterwards."""
        for block in self.blocks:
            block.close()


class LaplaceDiagnostics:
    """A Laplace fit's verdict over its parts (``PartVerdict.as_dict`` each)."""

    def __init__(self, parts: dict):
        self.parts = parts

    @property
    def failures(self) -> list[str]:
        return [f"{part}: {failure}" for part, d in self.parts.items() for failure in d["failures"]]

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        values = [d for d in self.parts.values() if d["engine"] == "laplace"]
        worst = lambda key, pick: pick(d[key] for d in values)  # noqa: E731
        return {"passed": self.passed, "failures": self.failures, "engine": "laplace",
                "khat_max": worst("khat_max", max), "ess_min": worst("ess_min", min),
                "population_khat_max": worst("population_khat", max),
                "fallback": sorted({name for d in values for name in d["fallback"]}),
                "campaigns_failed": max(d["campaigns_failed"] for d in values)}


def _say(progress: bool, message: str) -> None:
    if progress:
        import sys

        print(message, file=sys.stderr, flush=True)


def fit(cells: Cells, config: ModelConfig = DEFAULT, seed: int = 0, progress: bool = True, runner=None,
        population_size: int = POPULATION_SIZE, fallback: bool = True, nuts_options: dict | None = None,
        spill=None, **options) -> LaplaceFit:
    """Fit ``cells`` with the Laplace engine (module doc).  ``options``: ``draws`` (output draws, a multiple
    of ``population_draws``), ``proposals`` (importance draws per campaign), ``population_draws``,
    ``block_size`` (campaigns per task); ``runner``: where the blocks run (``cluster.Runner``; None: here);
    ``fallback``: fit the campaigns that fail the gate with NUTS (``nuts_options`` for ``fitting.fit``);
    ``spill``: a folder where each block's draws are written as they land and read lazily from then on (a fit
    of one block keeps it in memory)."""
    from ... import cluster
    from ...errors import FitError
    from ..parts import model_parts
    from ..sharded import choose_population

    if cells.clicks.sum() == 0:
        raise FitError("no clicks in the data: nothing to learn a conversion rate from")
    unknown = set(options) - set(ENGINE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown Laplace engine option(s): {', '.join(sorted(unknown))}")
    opts = {**ENGINE_DEFAULTS, **options}
    runner = runner or cluster.Runner()
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    parts = model_parts(cells)
    known_rpc = known_value_per_conversion(cells)
    fitted = [p for p in parts if not (p == "revenue" and known_rpc is not None)]
    n = len(cells.campaigns)
    pooled = n > 1
    members = np.arange(n) if n <= population_size else np.array(choose_population(cells, population_size))
    models = {part: latent_model(part, cells, config) for part in fitted}
    populations = {}
    for i, part in enumerate(fitted):
        _say(progress, f"[{i + 1}/{len(fitted)}] {part}: population of {len(members)} campaign(s) by nested Laplace")
        # twice the draws kept: the members' exact evidence then weighs them, and the kept ones are resampled
        population = engine.population(models[part], members, 2 * opts["population_draws"], rng)
        populations[part] = engine.correct(models[part], population, members, opts["population_draws"], rng)
        if opts["point_population"]:
            populations[part] = populations[part].at_mean()
    population_seconds = time.perf_counter() - start
    population = {}
    for part in fitted:
        pop = populations[part]
        m_of = np.arange(opts["draws"]) % len(pop.psi)
        one = models[part].take(members[:1])
        theta0 = np.repeat(one.start(np.arange(1))[0][None], opts["draws"], axis=0)
        names = part_variables(part, one, pop.psi[m_of], pop.shared[m_of], theta0, pooled,
                               np.random.default_rng(seed + 7))
        population.update({name: v for name, v in names.items() if "campaign" not in v[0]})
    population = _dataset(population, None, config)
    size = opts["block_size"]
    if runner.parallel and "block_size" not in options:  # about three blocks per worker: the load balances
        size = int(min(size, max(10, np.ceil(n / (3 * runner.describe().get("workers", 1))))))
    groups = [np.arange(lo, min(lo + size, n)) for lo in range(0, n, size)]
    _say(progress, f"campaigns given the population: {n} in {len(groups)} block(s), {opts['proposals']} "
                   "importance draws each")
    def keep(k: int, block: Block) -> Block:
        if known_rpc is not None:  # not sampled: the same value in every draw
            values = np.broadcast_to(np.log(known_rpc[block.campaigns]), (1, opts["draws"], len(block.campaigns)))
            for name in ("log_rpc", "rpc_level"):
                block.posterior[name] = (("chain", "draw", "campaign"), values.copy())
        if spill is None or len(groups) == 1:  # one block is the whole fit: writing it out first saves nothing
            return block
        return block.spill(Path(spill) / f"block_{k + 1}.nc")

    blocks = runner.run([(fit_block, {part: m.take(g) for part, m in models.items()}, populations, g,
                          tuple(cells.campaigns[i] for i in g), pooled, opts, seed + 1 + k, config)
                         for k, g in enumerate(groups)], [f"block {k + 1}" for k in range(len(groups))], progress,
                        keep=keep)
    verdicts = {}
    for part in fitted:
        field_of = lambda name: np.concatenate([getattr(b.draws[part], name) for b in blocks])  # noqa: E731
        first = blocks[0].draws[part]
        verdict = PartVerdict(populations[part], field_of("khat"), field_of("ess"), field_of("quantity_khat"),
                              field_of("conflict"), np.ones(n, bool), first.proposals)
        verdict.passed_campaigns = engine.CampaignDraws(None, verdict.khat, verdict.ess, verdict.quantity_khat,
                                                        verdict.conflict, None, first.proposals).passed(members)
        outside = np.setdiff1d(np.arange(n), members)
        outside = outside[verdict.passed_campaigns[outside]]  # an outlier flagged alone is refitted alone
        if engine.level_is_pooled(models[part], populations[part]):  # (else the population is not theirs to fit)
            verdict.shift = engine.population_shift(field_of("level_z")[outside], field_of("level_load")[outside])
        verdicts[part] = verdict
    settings = {"engine": "laplace", "draws": opts["draws"], "chains": 1, "tune": 0, "seed": seed,
                "sampler": "laplace", "parts": parts, "retried": {},
                "laplace": {**opts, "population_members": [cells.campaigns[i] for i in members],
                            "blocks": [[cells.campaigns[i] for i in g] for g in groups],
                            "seconds": [round(b.seconds, 2) for b in blocks],
                            "population_seconds": round(population_seconds, 2), **runner.describe()},
                "known_value_per_conversion": (None if known_rpc is None else
                                               dict(zip(cells.campaigns, map(float, known_rpc)))),
                "config": config.as_dict()}
    result = LaplaceFit(cells, population, blocks, verdicts, None, settings, 0.0, config)
    failed = result.failed
    if failed and fallback:
        result.fallback = _fallback(result, failed, members, populations, blocks, nuts_options or {}, seed, progress)
        for part, verdict in verdicts.items():
            verdict.fallback = [cells.campaigns[i] for i in failed]
            verdict.fallback_passed = bool(result.fallback.settings["part_diagnostics"][part]["passed"])
    elif failed:
        for verdict in verdicts.values():
            verdict.population.notes.append(f"{len(failed)} campaign(s) failed the gate and were not refitted")
    from ..config import MODEL_VERSION

    settings["model_version"] = MODEL_VERSION
    settings["part_diagnostics"] = result.part_diagnostics
    result.seconds = time.perf_counter() - start
    return result


def _fallback(result: LaplaceFit, failed: list[int], members: np.ndarray, populations: dict, blocks: list[Block],
              nuts_options: dict, seed: int, progress: bool):
    """NUTS for the ``failed`` campaigns under the conversion part's population (module doc)."""
    from ..conversion import PopulationPrior
    from ..fitting import fit as nuts_fit
    from ..parts import campaign_bucket
    from ..sharded import subset

    cells = result.cells
    names = [cells.campaigns[i] for i in failed]
    _say(progress, f"{len(failed)} campaign(s) failed the importance-sampling gate: fitting them with NUTS under "
                   f"the population ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    population = None
    if len(cells.campaigns) > 1 and "conversion" in populations:
        weights = None
        inside = [i for i in failed if i in set(members.tolist())]
        if inside:  # their own data out of the population first: weights 1 / p(y_c | population draw)
            evidence = np.concatenate([b.log_evidence["conversion"] for b in blocks])[inside].sum(axis=0)
            log_w = -(evidence - evidence.max())
            w = np.exp(log_w - log_w.max())
            m_of = np.arange(result.settings["draws"]) % len(w)
            weights = w[m_of]
        values = {name: result.population[name].values[0] for name in result.population.data_vars}
        population = PopulationPrior.from_values(values, weights)
    return nuts_fit(subset(cells, failed), seed=seed + 500, progress=progress, config=result.config,
                    population=population, size=campaign_bucket(len(failed)), **nuts_options)
