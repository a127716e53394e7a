"""gaelp_bayes: a Bayesian forecasting engine for ad budget pacing.

Data flows one way: ``data`` -> ``model`` -> ``cache`` -> ``predict`` /
``allocate`` / ``runtime`` / ``report``.  Importing the package is cheap; the
heavy stack (PyMC, ArviZ) is imported only by the modules that fit or report.
"""

__version__ = "0.1.0"
