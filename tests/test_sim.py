"""The auction simulator: the hindsight oracle bounds every policy, and nobody overspends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gaelp_bayes import sim


def test_policies_against_the_oracle(fitted):
    world = sim.make_world(campaigns=3, seed=11)  # the fixture's world
    history = sim.log_auction_history(world, days=7, seed=3)
    res = sim.compare_policies(world, history, str(fitted.path), ["2026-03-02", "2026-03-03"])
    assert set(res["policy"]) == set(sim.POLICIES)
    assert (res["spent"] <= res["budget"] + 1e-9).all() and (res["overspend"] == 0).all()
    assert (res["expected_conversions"] <= res["oracle"] * (1 + 1e-9)).all()
    table = sim.summarize(res)
    assert table.loc["oracle", "pct_of_oracle"] == 100.0
    assert table.loc["bayes", "pct_of_oracle"] > table.loc["even", "pct_of_oracle"]


def test_auction_day_is_reproducible_and_scenarios_apply():
    world = sim.make_world(campaigns=1, seed=2)
    a = sim.auction_day(world, 0, "2026-03-02", seed=5)
    b = sim.auction_day(world, 0, "2026-03-02", seed=5)
    assert np.array_equal(a.prices, b.prices) and np.array_equal(a.converts, b.converts)
    shifted = sim.auction_day(world, 0, "2026-03-02", seed=5, cvr_shift=(12, 18, 0.5))
    inside = (a.hours >= 12) & (a.hours < 18)
    assert np.allclose(shifted.cvr[inside], 0.5 * a.cvr[inside])
    assert np.allclose(shifted.cvr[~inside], a.cvr[~inside])
    spiked = sim.auction_day(world, 0, "2026-03-02", seed=5, price_spike=(10, 12, 3.0))
    in_spike = (a.hours >= 10) & (a.hours < 12)
    assert np.allclose(spiked.prices[in_spike], 3.0 * a.prices[in_spike])


def test_the_truth_policies_pace_on_the_worlds_truth_and_unknown_policies_are_errors(capsys):
    """``truth`` and ``truth-uncapped``: the pacer given the world's true rates, costs and volumes (the ceiling
    of a posterior for it), under its caps and without them; a policy nobody knows is an error before any fit."""
    from gaelp_bayes import cli

    world = sim.make_world(campaigns=2, seed=4)
    history = sim.log_auction_history(world, days=3, seed=5)
    res = sim.compare_policies(world, history, None, ["2026-03-02"], policies=("oracle", "truth", "truth-uncapped"))
    assert (res["spent"] <= res["budget"] + 1e-9).all() and (res["overspend"] == 0).all()
    assert (res["expected_conversions"] <= res["oracle"] * (1 + 1e-9)).all()
    day = sim.auction_day(world, 1, "2026-03-02", seed=1)
    pacer = sim.make_policy("truth-uncapped", world.campaigns[1], 100.0, day.start, history, world=world)
    assert np.array_equal(pacer.posterior.cvr[0], world.cvr[1].astype(np.float32))
    # its clicks and cost per click are what a history at the raw bid measures (not the market's median price)
    long = sim.log_auction_history(world, days=28, seed=6)
    logged = long[long["campaign"] == world.campaigns[1]]
    stamps = pd.to_datetime(logged["timestamp"], utc=True)
    cells = (stamps.dt.day_of_week.to_numpy(), stamps.dt.hour.to_numpy())
    volume, cpc = (a[0][cells] for a in (pacer.posterior.volume, pacer.posterior.cpc))
    assert logged["clicks"].sum() == pytest.approx(volume.sum(), rel=0.03)
    assert logged["spend"].sum() / logged["clicks"].sum() == pytest.approx(
        (cpc * logged["clicks"]).sum() / logged["clicks"].sum(), rel=0.02)
    assert pacer.plan_options["max_share"] == pacer.plan_options["bid_cap_share"] == 1.0
    assert not pacer.plan_options["learn"]
    assert cli.main(["simulate", "--policies", "bayes,nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
