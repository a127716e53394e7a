"""The fitted posterior: cache contents, calibration against known truth, predict."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gaelp_bayes import cache, cli, data, model, predict
from gaelp_bayes.errors import CacheError, FitError
from gaelp_bayes.runtime import Pacer

from helpers import fail_part

# a day just after the shared fit's data (which ends on 2026-02-08): plans and pacers are dated, never "today"
PLAN_DATE = "2026-02-10"
PLAN_NOW = pd.Timestamp(PLAN_DATE + "T10:00:00Z").timestamp()


def test_manifest_records_what_a_user_needs(fitted):
    m = fitted.manifest
    assert m["schema_version"] == cache.SCHEMA_VERSION
    assert m["campaigns"] == ["campaign_01", "campaign_02", "campaign_03"]
    assert m["timezone"] == "UTC" and m["has_spend"] and m["has_revenue"]
    assert set(m["files"]) == {"posterior.nc", "runtime/digests.npy"}
    diag = m["diagnostics"]  # the default engine's: Laplace + importance sampling per campaign
    assert diag["engine"] == "laplace" and m["settings"]["config"]["engine"] == "auto"
    for key in ("khat_max", "ess_min", "population_khat_max", "fallback", "passed"):
        assert key in diag
    assert diag["passed"] == (not diag["failures"])
    for part, verdict in m["parts"].items():
        assert verdict["khat_max"] <= verdict["khat_threshold"] and verdict["ess_min"] >= 400, part
        assert verdict["fallback_rate"] == len(verdict["fallback"]) / 3
    cells = data.aggregate(data.load_windows(fitted.train_csv))
    assert m["data_fingerprint"] == cells.fingerprint()


def test_runtime_files_are_float32_campaign_major_without_pickles(fitted):
    runtime = {key: np.load(fitted.path / "runtime" / f"{key}.npy", allow_pickle=False)
               for key in ("cvr", "cpc", "volume", "rpc")}
    assert runtime["cvr"].dtype == np.float32
    assert runtime["cvr"].shape == (4, 1000, 7, 24)  # 3 campaigns + the population slot, each one block
    for key in ("cpc", "volume"):
        assert runtime[key].shape == runtime["cvr"].shape
    assert runtime["rpc"].shape == (4, 1000)
    assert ((runtime["cvr"] > 0) & (runtime["cvr"] < 1)).all()
    _, arrays = cache.read_runtime(fitted.path)  # the readers' view: [draw, slot, ...]
    assert np.array_equal(arrays["cvr"][:, 2], runtime["cvr"][2])


def test_full_posterior_reads_back(fitted):
    _, tree = cache.read_posterior(fitted.path)
    post = tree["posterior"].to_dataset()
    assert {"sigma_cell", "campaign_level", "dev_coef", "log_cpc", "vol_hour", "log_rpc"} <= set(post.data_vars)
    assert "log_volume" not in post  # recomputed at export from vol_level, vol_hour and vol_dow
    assert "cell_effect" not in post  # integrated out: each draw's cell rates are drawn in runtime/cvr.npy
    assert int(tree["observed_data"].to_dataset()["clicks"].sum()) == int(fitted.train["clicks"].sum())


def test_posterior_mean_beats_empirical_rates_and_intervals_cover_truth(fitted):
    """RMSE against the true cell rates: posterior mean vs raw per-cell empirical rate."""
    _, arrays = cache.read_runtime(fitted.path)
    post_mean = arrays["cvr"][:, :3].mean(axis=0)
    cells = data.aggregate(data.load_windows(fitted.train_csv))
    truth = fitted.world.cvr[cells.campaign, cells.dow, cells.hour]
    empirical = cells.conversions / np.maximum(cells.clicks, 1)
    rmse_post = np.sqrt(np.mean((post_mean[cells.campaign, cells.dow, cells.hour] - truth) ** 2))
    rmse_emp = np.sqrt(np.mean((empirical - truth) ** 2))
    assert rmse_post < rmse_emp
    lo, hi = np.quantile(arrays["cvr"][:, :3], [0.05, 0.95], axis=0)
    covered = (lo <= fitted.world.cvr) & (fitted.world.cvr <= hi)
    assert 0.8 <= covered.mean() <= 1.0


def test_held_out_week_coverage_is_calibrated(fitted, tmp_path):
    """Held-out week: the randomized PIT puts 85-95% of windows inside its central 90% (CLI end to end)."""
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(fitted.path), str(fitted.holdout_csv), "--out", str(out), "--force"]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == len(fitted.holdout)
    pit_inside = (pred["pred_pit"] >= 0.05) & (pred["pred_pit"] <= 0.95)
    assert 0.85 <= pit_inside.mean() <= 0.95, f"PIT coverage {pit_inside.mean():.3f}"
    inside = (pred["pred_conversions_lo"] <= pred["conversions"]) & (pred["conversions"] <= pred["pred_conversions_hi"])
    assert inside.mean() >= 0.85, f"interval coverage {inside.mean():.3f}"  # conservative on small counts
    assert (pred["pred_cvr_lo"] <= pred["pred_cvr_mean"]).all() and (pred["pred_cvr_mean"] <= pred["pred_cvr_hi"]).all()


def test_predict_unseen_campaign_uses_population_with_wider_interval(fitted):
    rows = fitted.holdout[fitted.holdout["campaign"] == "campaign_01"].head(24).copy()
    new = rows.assign(campaign="brand_new")
    out, warnings = predict.predict(str(fitted.path), pd.concat([rows, new]), force=True)
    assert any("brand_new" in w for w in warnings)
    width = out["pred_cvr_hi"] - out["pred_cvr_lo"]
    assert width.iloc[24:].mean() > 2 * width.iloc[:24].mean()


def test_predict_needs_only_timestamp_and_clicks(fitted):
    frame = pd.DataFrame({"timestamp": ["2026-03-02T10:00:00Z"], "campaign": ["campaign_02"], "clicks": [100]})
    out, _ = predict.predict(str(fitted.path), frame, force=True)
    assert 0 <= out["pred_conversions_lo"][0] <= out["pred_conversions_mean"][0] <= out["pred_conversions_hi"][0]


def test_predict_in_row_chunks_gives_the_same_rates_and_pit(fitted, monkeypatch):
    """Rows are predicted a chunk at a time (memory bounded at thousands of campaigns): the same answer."""
    whole, _ = predict.predict(str(fitted.path), fitted.holdout.head(500), force=True)
    monkeypatch.setattr(predict, "ROW_CHUNK_VALUES", 37 * 400)  # 37 rows of 400 draws at a time
    chunked, _ = predict.predict(str(fitted.path), fitted.holdout.head(500), force=True)
    for column in ("pred_conversions_mean", "pred_cvr_mean", "pred_cvr_lo", "pred_cvr_hi", "pred_pit"):
        np.testing.assert_array_equal(chunked[column], whole[column], err_msg=column)
    assert (chunked["pred_conversions_lo"] <= chunked["pred_conversions_hi"]).all()


@pytest.fixture
def copy_of(fitted, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(fitted.path, dst)
    return dst


def test_tampered_draws_are_refused_per_campaign(copy_of):
    """One flipped byte in campaign_02's block: every reader of campaign_02 refuses the cache, readers of
    another campaign read (and check) only their own block and go on."""
    path = copy_of / "runtime" / "cvr.npy"
    raw = bytearray(path.read_bytes())
    raw[-3 * 4 * 1000 * 168 + 100] ^= 0xFF  # slot 1 of 4 (campaign_02): its block starts 3 from the end
    path.write_bytes(bytes(raw))
    for read in (lambda: cache.read_runtime(copy_of), lambda: cache.read_runtime(copy_of, campaigns=["campaign_02"])):
        with pytest.raises(CacheError, match="draws of 'campaign_02' do not match their sha256"):
            read()
    cache.read_runtime(copy_of, campaigns=["campaign_01", "unseen campaign"])
    pacer = Pacer.load(copy_of, 100.0, campaign="campaign_01", journal=copy_of.parent / "j", now=PLAN_NOW)
    assert pacer.status()["emergency_stop"] is None
    stopped = Pacer.load(copy_of, 100.0, campaign="campaign_02", journal=copy_of.parent / "j", now=PLAN_NOW)
    assert "campaign_02" in stopped.status()["emergency_stop"]
    with pytest.raises(CacheError, match="campaign_02"):
        predict.predict(str(copy_of), pd.DataFrame({"timestamp": ["2026-03-02T10:00:00Z"], "clicks": [1],
                                                    "campaign": ["campaign_02"]}))
    assert not cache.holds_fit_of(copy_of, cache.read_manifest(copy_of)["data_fingerprint"], model.MODEL_VERSION)


def test_truncated_posterior_is_refused(copy_of):
    path = copy_of / "posterior.nc"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CacheError, match="posterior.nc: sha256 does not match"):
        cache.read_posterior(copy_of)


@pytest.mark.parametrize("edit", ["campaigns swapped", "timezone", "created_at", "drift_anchor"])
def test_an_edited_manifest_is_refused(copy_of, edit):
    """Swapping two campaign names in manifest.json was accepted (campaign A got B's plan: CPA 36.96 instead
    of 3.69), as were edits of the timezone, created_at and the drift anchor (an unknown timezone: a
    ZoneInfoNotFoundError traceback).  The manifest carries its own checksum."""
    from gaelp_bayes.runtime import Pacer

    manifest = json.loads((copy_of / "manifest.json").read_text())
    if edit == "campaigns swapped":
        manifest["campaigns"] = [manifest["campaigns"][1], manifest["campaigns"][0], *manifest["campaigns"][2:]]
    elif edit == "timezone":
        manifest["timezone"] = "Mars/Olympus_Mons"
    elif edit == "created_at":
        manifest["created_at"] = "2099-01-01T00:00:00+00:00"
    else:
        manifest["drift_anchor"] = "2030-01-01T00:00:00+00:00"
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="checksum does not match"):
        cache.read_manifest(copy_of)
    pacer = Pacer.load(copy_of, 100.0, campaign="campaign_01", now=1.78e9, force=True)
    assert pacer.adjust_bid(1.0, now=1.78e9) == 0.0 and "checksum" in pacer.status(1.78e9)["emergency_stop"]


def test_missing_file_and_wrong_version_are_refused(copy_of):
    manifest = json.loads((copy_of / "manifest.json").read_text())
    (copy_of / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(CacheError, match="schema version 99"):
        cache.read_manifest(copy_of)
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    (copy_of / "runtime" / "cpc.npy").unlink()
    with pytest.raises(CacheError, match="runtime/cpc.npy: unreadable runtime file"):
        cache.read_runtime(copy_of, campaigns=["campaign_01"])
    (copy_of / "runtime" / "digests.npy").unlink()
    with pytest.raises(CacheError, match="runtime/digests.npy is missing"):
        cache.read_manifest(copy_of)


def test_failed_fit_is_refused_unless_forced(copy_of):
    fail_part(copy_of, "conversion")
    with pytest.raises(FitError, match="the conversion part of this fit failed its diagnostics gate .*R-hat 1.300"):
        predict.predict(str(copy_of), pd.DataFrame({"timestamp": ["2026-03-02T10:00:00Z"], "clicks": [1]}))
    predict.predict(str(copy_of), pd.DataFrame({"timestamp": ["2026-03-02T10:00:00Z"], "clicks": [1]}), force=True)


def test_cache_write_is_atomic(fitted, tmp_path, monkeypatch):
    """A failure while writing leaves the previous cache intact and no temp folders behind."""
    target = tmp_path / "models" / "m"
    shutil.copytree(fitted.path, target)
    before = (target / "manifest.json").read_text()

    class Boom(Exception):
        pass

    def fail(*a, **k):
        raise Boom

    monkeypatch.setattr(np, "save", fail)
    _, tree = cache.read_posterior(fitted.path)
    fake = model.Fit(tree=tree, diagnostics=None, settings={"seed": 0}, seconds=1.0)
    cells = data.aggregate(data.load_windows(fitted.train_csv))
    with pytest.raises(Boom):
        cache.write(target, fake, cells, overwrite=True)
    assert (target / "manifest.json").read_text() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


def test_a_cache_is_reused_only_for_the_same_data_model_version_and_a_passing_gate(copy_of, fitted):
    fingerprint = data.aggregate(data.load_windows(fitted.train_csv)).fingerprint()
    manifest = json.loads((copy_of / "manifest.json").read_text())
    assert cache.holds_fit_of(copy_of, fingerprint, model.MODEL_VERSION, accept_failed=True)
    assert not cache.holds_fit_of(copy_of, "other data", model.MODEL_VERSION, accept_failed=True)
    assert not cache.holds_fit_of(copy_of, fingerprint, model.MODEL_VERSION - 1, accept_failed=True)
    manifest["diagnostics"] = {**manifest["diagnostics"], "passed": False}
    cache.write_manifest(copy_of, manifest)
    assert not cache.holds_fit_of(copy_of, fingerprint, model.MODEL_VERSION)
    assert cache.holds_fit_of(copy_of, fingerprint, model.MODEL_VERSION, accept_failed=True)
    raw = bytearray((copy_of / "posterior.nc").read_bytes())  # kept only when every byte checks
    raw[len(raw) // 2] ^= 0xFF
    (copy_of / "posterior.nc").write_bytes(bytes(raw))
    assert not cache.holds_fit_of(copy_of, fingerprint, model.MODEL_VERSION, accept_failed=True)


def test_a_failed_revenue_part_refuses_only_what_needs_revenue(copy_of, tmp_path):
    from gaelp_bayes.allocate import allocate
    from gaelp_bayes.errors import FitError
    from gaelp_bayes.runtime import Pacer

    fail_part(copy_of, "revenue")
    plan = allocate(str(copy_of), 50.0, campaign="campaign_01", date=PLAN_DATE)  # conversions: no revenue needed
    assert plan.expected_roas is None and any("revenue part" in w for w in plan.warnings)
    with pytest.raises(FitError, match="the revenue part"):
        allocate(str(copy_of), 50.0, campaign="campaign_01", date=PLAN_DATE, objective="revenue")
    with pytest.raises(FitError, match="the revenue part"):
        allocate(str(copy_of), 50.0, campaign="campaign_01", date=PLAN_DATE, strict=True)
    predict.predict(str(copy_of), pd.DataFrame({"timestamp": ["2026-03-02T10:00:00Z"], "clicks": [1]}))
    pacer = Pacer.load(copy_of, 50.0, campaign="campaign_01", journal=tmp_path / "j", now=PLAN_NOW)
    assert pacer.status()["bidding"] and pacer.posterior.rpc is None
    with pytest.raises(FitError, match="the revenue part"):
        Pacer.load(copy_of, 50.0, campaign="campaign_01", journal=tmp_path / "j", now=PLAN_NOW, strict=True)


@pytest.mark.parametrize("part,refused", [("conversion", {"predict", "allocate", "pacer"}),
                                          ("cost", {"allocate", "pacer"}), ("volume", {"allocate", "pacer"})])
def test_a_failed_part_that_a_consumer_uses_is_refused_by_it(copy_of, tmp_path, capsys, part, refused):
    from gaelp_bayes.runtime import Pacer

    fail_part(copy_of, part)
    windows = tmp_path / "w.csv"
    windows.write_text("timestamp,clicks\n2026-03-02T10:00:00Z,1\n")
    codes = {"predict": cli.main(["predict", str(copy_of), str(windows), "--out", str(tmp_path / "p.csv")]),
             "allocate": cli.main(["allocate", str(copy_of), "--budget", "50", "--campaign", "campaign_01", "--date",
                                   PLAN_DATE])}
    reason = Pacer.load(copy_of, 50.0, campaign="campaign_01", journal=tmp_path / "j",
                        now=PLAN_NOW).status()["emergency_stop"]
    assert {name for name, code in codes.items() if code == 4} | ({"pacer"} if reason else set()) == refused
    assert reason is None or f"the {part} part" in reason
    assert f"the {part} part" in capsys.readouterr().err


def test_a_fixed_value_per_conversion_is_known_not_sampled():
    """Lead-gen accounts report a fixed value per conversion: no noise to fit, so the value is known
    (a Gamma's shape ran to infinity there: revenue_shape R-hat 11.97 in the issue's data)."""
    from gaelp_bayes import model

    def cells_of(revenue, conversions=(2, 0, 3, 1)):
        frame = pd.DataFrame({"timestamp": ["2026-01-05T00:00:00Z", "2026-01-05T01:00:00Z", "2026-01-05T00:00:00Z",
                                            "2026-01-05T01:00:00Z"], "campaign": ["a", "a", "b", "b"],
                              "clicks": [10, 10, 10, 10], "conversions": list(conversions), "revenue": revenue})
        return data.aggregate(data.load_windows(frame))

    assert model.known_value_per_conversion(cells_of([120.0, 0.0, 150.0, 50.0])).tolist() == [60.0, 50.0]
    assert model.known_value_per_conversion(cells_of([120.0, 0.0, 150.0, 51.0])) is None  # b's values differ
    assert model.known_value_per_conversion(cells_of([120.0, 5.0, 150.0, 50.0])) is None  # revenue, no conversion
    assert model.known_value_per_conversion(cells_of([120.0, 0.0, 0.0, 0.0])) is None  # b's conversions earn 0
    no_conversions_in_b = cells_of([120.0, 60.0, 0.0, 0.0], conversions=(2, 1, 0, 0))
    assert model.known_value_per_conversion(no_conversions_in_b).tolist() == [60.0, 60.0]  # b: the others' value


def test_a_fit_with_a_fixed_value_per_conversion_passes_its_revenue_part(fitted, tmp_path):
    train = fitted.train.assign(revenue=60.0 * fitted.train["conversions"])
    csv = tmp_path / "fixed_value.csv"
    train.to_csv(csv, index=False)
    code = cli.main(["fit", str(csv), "--out", str(tmp_path / "m"), "--draws", "200", "--tune", "200",
                     "--chains", "2", "--seed", "5", "--quiet"])
    manifest, arrays = cache.read_runtime(tmp_path / "m")
    assert code in (0, 4) and (code == 0) == (not cache.failed_parts(manifest))
    assert cache.part_verdicts(manifest)["revenue"]["passed"]
    assert manifest["settings"]["known_value_per_conversion"] == {c: 60.0 for c in manifest["campaigns"]}
    assert np.allclose(arrays["rpc"][:, :-1], 60.0)  # the campaigns' value; a new campaign's is uncertain


def test_cli_sampling_defaults_are_the_models():
    """Unset, --draws/--tune/--chains leave the model's defaults (which the help text states)."""
    from gaelp_bayes.model import config

    args = cli.build_parser().parse_args(["fit", "w.csv", "--out", "m"])
    assert cli.sampling(args) == {}
    assert cli.sampling(cli.build_parser().parse_args(["fit", "w.csv", "--out", "m", "--tune", "800"])) == {"tune": 800}
    help_text = " ".join(a.help for a in cli.build_parser()._subparsers._group_actions[0].choices["fit"]._actions
                         if a.dest in ("draws", "tune", "chains"))
    for value in (config.DRAWS, config.TUNE, config.CHAINS):
        assert f"default {value})" in help_text


@pytest.mark.parametrize("diverged", [False, True])
def test_the_retry_appends_new_chains_or_restarts_after_divergences(diverged):
    """Slow mixing: new chains at the same settings, appended to the first ones and thinned (the first
    sampling's draws are kept); divergences: a longer restart at the retry's target acceptance."""
    import xarray as xr

    from gaelp_bayes.data import Cells
    from gaelp_bayes.model import fitting

    calls, draws, chains = [], 4, 2

    def fake_sampler(model, draws, tune, chains, seed, target_accept, progress):
        calls.append({"draws": draws, "tune": tune, "target_accept": target_accept})
        values = np.full((chains, draws), float(len(calls))) + np.arange(draws) / 100
        return xr.DataTree.from_dict({"posterior": xr.Dataset({"x": (("chain", "draw"), values)}),
                                      "sample_stats": xr.Dataset({"diverging": (("chain", "draw"), values < 0)})})

    none = np.zeros(0, dtype=int)
    cells = Cells(("a",), "UTC", none, none, none, none, none, none, None, None, ("", ""), 0)
    first = fake_sampler(None, draws, 10, chains, 0, 0.9, False)
    config = model.ModelConfig(retry_target_accept=0.99)
    tree = fitting._retry(fake_sampler, None, first, diverged, cells, draws, 10, chains, 1, 0.9, config, False, "x")
    x = tree["posterior"]["x"].values
    assert x.shape == (chains, draws) and tree["sample_stats"]["diverging"].shape == (chains, draws)
    if diverged:
        assert calls[1] == {"draws": 2 * draws, "tune": 20, "target_accept": 0.99}
        assert np.allclose(x[0], 2 + np.arange(1, 2 * draws, 2) / 100)  # the restart's draws, thinned
    else:
        assert calls[1] == {"draws": draws, "tune": 10, "target_accept": 0.9}
        assert np.allclose(x[0], [1.01, 1.03, 2.01, 2.03])  # the first sampling's, then the new chains'


def test_a_censored_export_fits_end_to_end_and_its_delay_reaches_the_pacer(tmp_path):
    """windows --conversion-time writes censored windows and the delay sample beside them; fit picks the
    sample up by itself; its quantiles travel in the cache, and the pacer waits for postbacks by them."""
    rng = np.random.default_rng(3)
    clicks = pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 6 * 86400, 3000)), "s")
    converts = rng.uniform(size=clicks.size) < 0.05
    delay = pd.to_timedelta(np.where(rng.uniform(size=clicks.size) < 0.5, rng.exponential(120, clicks.size),
                                     rng.exponential(6 * 3600, clicks.size)), "s")
    events = pd.DataFrame({"click_time": clicks.strftime("%Y-%m-%dT%H:%M:%SZ"), "is_attributed": converts.astype(int),
                           "attributed_time": np.where(converts, (clicks + delay).strftime("%Y-%m-%dT%H:%M:%SZ"), ""),
                           "cost": rng.uniform(0.3, 0.7, clicks.size).round(2)})
    # (prices that vary: with one price for every click the cost part fails its gate, README "The model")
    events.to_csv(tmp_path / "events.csv", index=False)
    windows = tmp_path / "w.csv"
    assert cli.main(["windows", str(tmp_path / "events.csv"), "--time", "click_time", "--outcome", "is_attributed",
                     "--cost", "cost", "--conversion-time", "attributed_time", "--out", str(windows)]) == 0
    assert "observed_until" in pd.read_csv(windows) and len(data.read_delays(data.delay_file(windows))) > 20
    out = tmp_path / "m"
    code = cli.main(["fit", str(windows), "--out", str(out), "--quiet"])
    manifest = cache.read_manifest(out)
    assert code == 0 and len(manifest["conversion_delay"]) == cache.DELAY_QUANTILES
    pacer = Pacer.load(out, 100.0, journal=tmp_path / "j", now=pd.Timestamp("2026-03-09", tz="UTC"))
    assert pacer.plan_options["conversion_delay"].size == cache.DELAY_QUANTILES
    from gaelp_bayes.report import build_report

    page = build_report(out, tmp_path / "r.html", date="2026-03-09").read_text()
    assert "conversion_delay" in page and "Reported within a minute" in page
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "w.csv"
    windows.rename(moved)  # without its delay sample: one clear line, exit 2
    assert cli.main(["fit", str(moved), "--out", str(tmp_path / "m2"), "--quiet"]) == 2
