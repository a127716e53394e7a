"""The model's settings in one place: priors, the diagnostics gate, the retry policy, the sampler's defaults.

A fit stores its ``ModelConfig`` in the cache's manifest (``settings["config"]``), so a cache says which
priors and which gate it was made with.  ``MODEL_VERSION`` changes when the model's structure changes:
the demo does not reuse cached fits of another version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MODEL_VERSION = 15  # 15: a shard's population carries the drift's; 14: drift of the conversion level over weeks

# NUTS settings of each part's sampling (a fit can override each): nutpie adapts its step size and mass
# matrix within a few hundred steps; 500 tuning steps at target_accept 0.9 passed the gate first time on
# every battery shape with seeds nobody tuned on (reports/benchmarks/robustness.md)
CHAINS, TUNE, DRAWS, TARGET_ACCEPT = 4, 500, 1000, 0.9
# a sharded fit (sharded.py): campaigns in the population fit, campaigns per shard (a bucket: no padding)
POPULATION_SIZE, SHARD_SIZE = 24, 24


ENGINES = ("auto", "laplace", "nuts")  # model/engines.py


@dataclass(frozen=True)
class ModelConfig:
    """Priors (scales on the model's own scale, named after the variable they set), gate and retry policy,
    and the inference engine (``model/engines.py``)."""

    engine: str = "auto"  # auto (Laplace, NUTS where its population fails its gate) | laplace | nuts
    hour_harmonics: int = 6  # Fourier harmonics of every hour curve (conversion, volume)
    cpc_harmonics: int = 2  # of the cost-per-click hour curve
    # conversion part: logit rate = level[c] + curve[c](h) + day[d], cells Beta around it
    level_center_sd: float = 2.0  # mu ~ N(logit of the pooled rate, this); one campaign: its level
    sigma_campaign_scale: float = 1.0  # HalfNormal scale of the campaigns' levels around mu
    sigma_hour_scale: float = 0.5  # HalfNormal scale of the population hour curve's Fourier coefficients
    sigma_dev_scale: float = 0.3  # HalfNormal scale of campaign curves around the population curve
    dow_sd: float = 0.5  # ZeroSumNormal scale of day-of-week effects
    sigma_cell_shape: float = 2.0  # Gamma(shape, rate) prior of the cell effects' log-odds scale:
    sigma_cell_rate: float = 10.0  # mean 0.2; zero-avoiding, so the cells' Beta never gets huge arguments
    # drift of each campaign's conversion level over the weeks of the data (log scale, per week): a trend
    # (campaigns' trends ~ N(trend_mean, sigma_trend)) plus a random walk (steps ~ N(0, sigma_walk))
    drift: bool = True  # False: every week alike (the model before version 14)
    drift_trend_sd: float = 0.1  # trend_mean ~ N(0, this)
    drift_trend_spread_shape: float = 2.0  # Gamma(shape, rate) prior of sigma_trend: mean 0.025 a week,
    drift_trend_spread_rate: float = 80.0  # zero-avoiding (a funnel at zero spread with a few campaigns)
    drift_walk_scale: float = 0.05  # HalfNormal scale of sigma_walk (zero: stationary data)
    # cost part: log cpc = level[c] + curve(h), each click's cost Gamma(cost_shape)
    cpc_level_sd: float = 1.0
    cpc_hour_sd: float = 0.3
    cost_shape_median: float = 5.0
    cost_shape_log_sd: float = 1.0
    # volume part: log clicks per window = level[c] + curve[c](h) + day[d], negative binomial
    volume_level_sd: float = 2.0
    volume_coef_sd: float = 1.0
    volume_dow_sd: float = 0.3
    volume_shape_median: float = 10.0
    volume_shape_log_sd: float = 1.5
    # revenue part: log revenue per conversion = level[c], Gamma(revenue_shape) per conversion
    rpc_level_sd: float = 1.5
    revenue_shape_median: float = 2.0
    revenue_shape_log_sd: float = 1.0
    # a new campaign when only one was fitted: its level and hour curve around that one's (log scales)
    unseen_level_sd: float = 1.0
    unseen_curve_sd: float = 0.3
    # the gate every part must pass, and the one automatic retry of a part that does not
    rhat_max: float = 1.01
    ess_bulk_min: float = 400.0
    ess_tail_min: float = 400.0
    divergences_max: int = 0
    retry_target_accept: float = 0.99  # when the first sampling diverged
    # a part whose first sampling took longer is not retried; None: every part that fails is (the retry of a
    # part that only mixed slowly costs about its first sampling again)
    retry_max_seconds: float | None = None

    @property
    def gate(self) -> dict:
        return {"rhat_max": self.rhat_max, "ess_bulk_min": self.ess_bulk_min, "ess_tail_min": self.ess_tail_min,
                "divergences_max": self.divergences_max}

    def __post_init__(self):
        if self.engine not in ENGINES:
            from ..errors import UsageError

            raise UsageError(f"engine: unknown engine {self.engine!r} (one of {', '.join(ENGINES)})")

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT = ModelConfig()
