"""The hierarchical PyMC model of hourly conversion rates, cost, volume and revenue; its fit and gate.

Conversion rate of cell (campaign c, day-of-week d, local hour h), partially pooled across campaigns::

    logit mean[c,d,h] = level[c] + curve_c(h) + day[d],     rate[c,d,h] ~ Beta around mean[c,d,h]

Modules, in the order data flows through them:

- ``config``: ``ModelConfig`` (priors, the gate, the retry policy; stored in each cache's manifest) and
  ``MODEL_VERSION``.
- ``common`` and ``curves``: shared terms; campaign curves sampled in (conditionally) whitened coordinates.
- one module per part, each with its priors, likelihood and runtime export: ``conversion``, ``volume``,
  ``cost`` (where spend is present) and ``revenue`` (where revenue is present); ``parts`` builds them, for
  the number of campaigns rounded up to a bucket (``padded``), so that a refit reuses the compiled sampler.
- ``gate``: diagnostics and the gate every part must pass.
- ``fitting``: sampler backends (``SAMPLERS``), the one automatic retry, merging the parts.
- ``sharded``: many campaigns as a population fit and shards fitted under its posterior (on Dask with
  ``gaelp_bayes/cluster.py``).
- ``laplace/``: the Laplace engine (each part's population by nested Laplace, each campaign by Laplace +
  importance sampling, NUTS where its gate fails); ``engines``: ``fit`` with either engine.
- ``export``: the runtime's float32 arrays from a posterior.
"""

from .common import fourier_basis
from .config import DEFAULT, ENGINES, MODEL_VERSION, ModelConfig
from .conversion import cell_beta
from .export import runtime_arrays
from .engines import fit
from .fitting import SAMPLERS, Fit, cells_dataset
from .gate import Diagnostics, diagnose
from .parts import KEY_PARAMETERS, PART_MODULES, PARTS, build_model, campaign_bucket, model_parts, padded
from .revenue import known_value_per_conversion

__all__ = ["DEFAULT", "ENGINES", "KEY_PARAMETERS", "MODEL_VERSION", "PARTS", "PART_MODULES", "SAMPLERS", "Diagnostics", "Fit",
           "ModelConfig", "build_model", "campaign_bucket", "cell_beta", "cells_dataset", "diagnose", "fit", "fourier_basis",
           "known_value_per_conversion", "model_parts", "padded", "runtime_arrays"]
