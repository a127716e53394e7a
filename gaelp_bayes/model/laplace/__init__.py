"""The Laplace engine: each part's population by nested Laplace, each campaign by Laplace + Pareto-smoothed
importance sampling under it, NUTS where a campaign's gate fails.

- ``engine``: the two stages, generic over a part (``LatentModel``).
- ``conversion``, ``volume``, ``money`` (cost and revenue): each part's likelihood in numpy with exact
  gradients and Hessians, its priors, and its posterior variables under the PyMC models' names.
- ``psis``: Pareto-smoothed importance sampling.
- ``fit``: the whole fit (``LaplaceFit``, written by ``cache.write`` like a NUTS fit).
"""
