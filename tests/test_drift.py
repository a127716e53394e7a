"""Drift: the conversion level moving over the weeks, learned from the weekly split of the data and
projected to the date of every forecast (predict, allocate, the pacer)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from gaelp_bayes import cache, cli, data, sim
from gaelp_bayes.allocate import allocate
from gaelp_bayes.predict import predict
from gaelp_bayes.runtime import Pacer

WEEKS, PER_WEEK = 5, -0.2  # the shared fixture's shape (its compiled samplers are reused), a fast fall


def test_cells_split_trials_and_conversions_by_week_counted_back_from_the_end():
    world = sim.make_world(campaigns=2, seed=5)
    history = sim.log_history(world, days=15, seed=6)
    cells = data.aggregate(data.load_windows(history))
    assert cells.weekly_trials.shape == cells.weekly_conversions.shape == (len(cells.clicks), 3)
    assert np.array_equal(cells.weekly_trials.sum(axis=1), cells.clicks)
    assert np.array_equal(cells.weekly_conversions.sum(axis=1), cells.conversions)
    stamps = pd.to_datetime(history["timestamp"], utc=True)
    last_week = history[stamps > stamps.max() - pd.Timedelta(days=7)]
    assert cells.weekly_trials[:, 0].sum() == last_week["clicks"].sum()  # column 0: the last 7 days
    one_week = data.aggregate(data.load_windows(history[stamps < stamps.min() + pd.Timedelta(days=7)]))
    assert one_week.weekly_trials is None and one_week.weekly_conversions is None


@pytest.fixture(scope="module")
def falling(tmp_path_factory):
    """A fit of 5 weeks whose true log-odds fall by 0.2 a week, and the week after it (held out)."""
    root = tmp_path_factory.mktemp("falling")
    world = sim.make_world(campaigns=3, seed=13)
    days = 7 * (WEEKS + 1)
    truth = sim.drifting_cvr(world, days, per_week=PER_WEEK)
    history = sim.log_history(world, days=days, seed=14, cvr=truth)
    hour_of, true_rate = sim.history_truth(world, history, truth)
    held = hour_of >= 7 * WEEKS * 24
    history.loc[~held].to_csv(root / "train.csv", index=False)
    assert cli.main(["fit", str(root / "train.csv"), "--out", str(root / "m"), "--seed", "1", "--quiet"]) == 0
    return root / "m", history[held].reset_index(drop=True), true_rate[held]


def test_a_falling_rate_is_learned_and_the_next_week_forecast_follows_it(falling):
    path, holdout, true_rate = falling
    manifest, arrays = cache.read_runtime(path)
    trend = arrays["drift"][:, :-1, 0]  # [draw, campaign]: log rate per week
    lo, hi = np.quantile(trend, [0.05, 0.95], axis=0)
    assert (hi < 0).all() and (lo < PER_WEEK * 0.9).all() and (hi > PER_WEEK * 1.1).all()  # near -0.2, below 0
    pred, _ = predict(str(path), holdout)
    expected = (true_rate * holdout["clicks"]).sum()
    assert abs(pred["pred_conversions_mean"].sum() / expected - 1) < 0.1  # a small week: ~180 conversions
    inside = (pred["pred_cvr_lo"] <= true_rate) & (true_rate <= pred["pred_cvr_hi"])
    assert inside.mean() >= 0.85


def test_forecasts_move_with_the_date_and_widen_with_the_horizon(falling):
    path, holdout, _ = falling
    manifest, arrays = cache.read_runtime(path)
    anchor = dt.datetime.fromisoformat(manifest["drift_anchor"])
    weeks = np.array([0.0, 1.0, 4.0])
    factor = cache.drift_factor(arrays, manifest, np.zeros(3, int), anchor.timestamp() + weeks * cache.WEEK_SECONDS)
    assert np.allclose(factor[:, 0], 1.0)  # at the anchor: the fitted last week
    width = np.diff(np.quantile(np.log(factor), [0.05, 0.95], axis=0), axis=0)[0]
    assert width[2] > width[1] > 0 and np.exp(np.log(factor[:, 2]).mean()) < 0.6  # four weeks of a -0.2 trend
    near, far = ((anchor + dt.timedelta(days=d)).date().isoformat() for d in (7, 28))
    soon, later = (allocate(str(path), 100.0, date=d, campaign="campaign_01") for d in (near, far))
    assert later.expected_conversions[0] < 0.75 * soon.expected_conversions[0]
    day = dt.datetime.combine(anchor.date() + dt.timedelta(days=28), dt.time(), dt.timezone.utc).timestamp()
    pacer = Pacer.load(path, 100.0, campaign="campaign_01", journal=path.parent / "j", now=day,
                       max_cache_age_days=1e6)
    assert pacer.posterior.cvr.mean() < 0.6 * arrays["cvr"][:, 0].mean()


def test_stationary_data_finds_no_trend(fitted):
    _, arrays = cache.read_runtime(fitted.path)
    trend = arrays["drift"][:, :-1, 0]
    lo, hi = np.quantile(trend, [0.05, 0.95], axis=0)
    assert ((lo < 0) & (hi > 0)).all() and (hi - lo < 0.15).all()


def test_report_shows_the_level_over_time(falling, tmp_path):
    from gaelp_bayes.report import build_report, figure_folder

    out = build_report(falling[0], tmp_path / "r.html", budget=50.0, campaign="campaign_01", date="2026-02-10")
    text = out.read_text()
    assert "conversion_level_over_time" in text and "per week" in text
    assert (figure_folder(out) / "conversion_level_over_time.png").stat().st_size > 1000


def test_forecasts_do_not_grow_with_the_horizon_and_stop_at_it(fitted, capsys):
    """Expected conversions of a campaign whose trend is about 0 rose with the planned date (20.8 the day
    after the data, 27.1 nine months later, 63.9 in 2030, 122.7 in 2199), and dates in 1999 and 2200 were
    accepted.  The walk now widens the interval without moving the mean, the trend is damped, and a date
    beyond MAX_FORECAST_WEEKS after the data, or before it, is one line and exit 2."""
    import datetime as dt

    from gaelp_bayes import cache

    end = dt.date.fromisoformat(fitted.manifest["period"][1][:10])
    near, far = end + dt.timedelta(days=2), end + dt.timedelta(weeks=cache.MAX_FORECAST_WEEKS - 1)
    while far.weekday() != near.weekday():  # the same weekday: the same cells
        far -= dt.timedelta(days=1)
    soon, later = (allocate(str(fitted.path), 100.0, date=str(d), campaign="campaign_01", force=True)
                   for d in (near, far))
    _, arrays = cache.read_runtime(fitted.path, campaigns=["campaign_01"])
    trend = float(np.abs(arrays["drift"][:, 0, 0].mean()))
    bound = np.exp(cache.DRIFT_DAMPING_WEEKS * trend) - 1 + 0.05
    assert abs(later.expected_conversions[0] / soon.expected_conversions[0] - 1) < bound  # (mean, lo, hi)
    width = lambda p: p.expected_conversions[2] - p.expected_conversions[1]  # noqa: E731
    assert width(later) > width(soon)
    # the walk alone (no trend, sd 0.1 a week): the forecast's mean stays, its spread grows
    walk = {"cvr": np.zeros((4000, 1, 7, 24)), "drift": np.tile([[[0.0, 0.1]]], (4000, 1, 1))}
    manifest = {**fitted.manifest, "drift_anchor": f"{end}T12:00:00+00:00"}
    anchor = dt.datetime.fromisoformat(manifest["drift_anchor"]).timestamp()
    factor = cache.drift_factor(walk, manifest, np.zeros(2, int), anchor + np.array([1.0, 25.0]) * cache.WEEK_SECONDS)
    assert np.allclose(factor.mean(axis=0), 1.0, atol=0.04) and factor[:, 1].std() > 3 * factor[:, 0].std()
    for date in ("1999-06-01", "2030-01-01", "2199-12-01", str(end + dt.timedelta(weeks=cache.MAX_FORECAST_WEEKS + 1))):
        code = cli.main(["allocate", str(fitted.path), "--budget", "100", "--campaign", "campaign_01", "--date", date,
                         "--force"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and date[:4] in err, err
