"""The runtime's arrays from a fitted posterior: each part exports its own (no PyMC needed)."""

from __future__ import annotations

import numpy as np

from .parts import PART_MODULES
from .config import DEFAULT, ModelConfig


def runtime_arrays(tree, max_draws: int = 1000, seed: int = 0, config: ModelConfig = DEFAULT) -> dict[str, np.ndarray]:
    """Float32 cubes the runtime needs, from a fitted DataTree.

    Each cube is [draw, campaign + 1, 7, 24]: index ``C`` (the last) is a new, unseen campaign drawn from
    the population level.  ``cvr`` and ``volume`` (expected clicks per hour) always; ``cpc`` with spend;
    ``rpc`` (revenue per conversion, [draw, campaign + 1]) with revenue.  ``max_draws`` draws, evenly
    spaced over the chains.
    """
    post = tree["posterior"].to_dataset()
    obs = tree["observed_data"].to_dataset()
    rng = np.random.default_rng(seed)
    total = post.sizes["chain"] * post.sizes["draw"]
    idx = np.unique(np.linspace(0, total - 1, min(max_draws, total)).round().astype(int))

    def draws_of(name: str) -> np.ndarray | None:
        """A posterior variable as [draw, ...] (chains stacked) at the chosen draws; None if absent."""
        if name not in post:
            return None
        values = post[name].values
        return values.reshape((-1,) + values.shape[2:])[idx]

    present = {"conversion": True, "volume": "vol_hour" in post, "cost": "log_cpc" in post,
               "revenue": "log_rpc" in post}
    out = {}
    for part, module in PART_MODULES.items():
        if present[part]:
            out.update(module.export(draws_of, obs, len(idx), rng, config))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
