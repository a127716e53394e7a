"""Helpers shared by the test modules (a module of its own: test modules do not import one another)."""

from __future__ import annotations

import datetime as dt
import json
import threading

import numpy as np

from gaelp_bayes import cache
from gaelp_bayes.runtime import CampaignPosterior, Pacer

DAY = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc).timestamp()  # a Monday, 00:00 UTC


def posterior(seed: int = 0, draws: int = 50) -> CampaignPosterior:
    """A campaign's runtime draws (rates, costs, volumes) drawn from ``seed``: for pacers in tests."""
    rng = np.random.default_rng(seed)
    cvr = np.clip(rng.uniform(0.01, 0.06, (1, 7, 24)) * rng.lognormal(0, 0.2, (draws, 7, 24)), 1e-4, 0.9)
    cpc = rng.uniform(0.3, 1.5, (1, 7, 24)) * np.ones((draws, 1, 1))
    volume = rng.uniform(20, 200, (1, 7, 24)) * np.ones((draws, 1, 1))
    return CampaignPosterior("test", cvr.astype(np.float32), cpc.astype(np.float32), volume.astype(np.float32))


class FullPathPacer(Pacer):
    """A pacer whose every bid takes ``adjust_bid``'s full path: its quick window never opens."""

    def _open_quick_window(self, h: int, limit: float, scale: float) -> None:
        pass


def run_in_threads(bidder, n: int = 4) -> list[Exception]:
    """Run ``bidder(seed)`` for seeds 0..n-1 in threads at once; the exceptions they raised."""
    errors = []

    def guarded(seed):
        try:
            bidder(seed)
        except Exception as exc:  # surfaced to the caller: a thread's exception must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def fail_part(path, part: str) -> None:
    """Mark one part of a cache as failed in its manifest (sealed again: a consistent cache with that verdict)."""
    manifest = json.loads((path / "manifest.json").read_text())
    verdicts = {p: dict(d) for p, d in cache.part_verdicts(manifest).items()}
    for p, d in verdicts.items():
        d.update(passed=p != part, failures=["R-hat 1.300 > 1.01 (test)"] if p == part else [])
    manifest["parts"] = verdicts
    manifest["diagnostics"] = {**manifest["diagnostics"], "passed": False, "failures": ["R-hat 1.300 > 1.01 (test)"]}
    cache.write_manifest(path, manifest)
