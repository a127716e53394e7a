"""Fits spread over a real Dask LocalCluster: the Laplace engine's blocks of campaigns (the default engine)
and the sharded NUTS fit (population fit + shards under its posterior)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from gaelp_bayes import cache, cli, data, model
from gaelp_bayes.model import sharded

pytest.importorskip("distributed")

SHARDED = ["--population-size", "2", "--shard-size", "1"]  # the shared data's 3 campaigns: 2, then 1


def test_plan_spreads_the_population_over_sizes_and_shards_the_rest(fitted):
    cells = data.aggregate(data.load_windows(fitted.train_csv))
    groups = sharded.plan(cells, population_size=2, shard_size=1)
    clicks = np.bincount(cells.campaign, weights=cells.clicks)
    assert sorted(groups[0]) == sorted([int(np.argmin(clicks)), int(np.argmax(clicks))])
    assert sorted(i for g in groups for i in g) == [0, 1, 2] and all(len(g) == 1 for g in groups[1:])
    part = sharded.subset(cells, groups[1])
    assert part.campaigns == (cells.campaigns[groups[1][0]],) and set(part.campaign) == {0}
    assert part.clicks.sum() == clicks[groups[1][0]]
    assert len(model.padded(part, at_least=24).campaigns) == 24  # a short last shard: the shards' one size


def test_laplace_blocks_on_a_local_cluster_give_the_draws_of_a_fit_in_this_process(fitted, tmp_path):
    """fit --workers 2 runs the Laplace engine's blocks (one campaign each) on a LocalCluster: the cache is the
    one a fit in this process writes, draw for draw (each block has its own seed, wherever it runs); the
    campaign outside the population of two agrees with the shared fit of all three."""
    out, here = tmp_path / "dask", tmp_path / "here"
    code = cli.main(["fit", str(fitted.train_csv), "--out", str(out), "--workers", "2", *SHARDED, "--seed", "5",
                     "--quiet"])
    assert cli.main(["fit", str(fitted.train_csv), "--out", str(here), *SHARDED, "--seed", "5", "--quiet"]) == code
    manifest, arrays = cache.read_runtime(out)
    _, expected = cache.read_runtime(here)
    assert code == 0 and manifest["diagnostics"]["engine"] == "laplace"
    how = manifest["settings"]["laplace"]
    assert how["runner"] == "dask" and how["workers"] == 2 and len(how["blocks"]) == 3
    assert len(how["population_members"]) == 2
    assert all(np.array_equal(arrays[key], expected[key]) for key in expected)
    joint_manifest, joint = cache.read_runtime(fitted.path)
    assert manifest["campaigns"] == joint_manifest["campaigns"]
    assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in joint.items()}
    for slot, name in enumerate(manifest["campaigns"]):  # each campaign's average rate within 1 sd of the
        # shared fit's, where its population holds all three campaigns
        rate, joint_rates = arrays["cvr"][:, slot].mean(), joint["cvr"][:, slot].mean(axis=(1, 2))
        assert abs(rate - joint_rates.mean()) < joint_rates.std(), name
    tree = cache.read_posterior(out)[1]
    assert "shards" in tree.children and "posterior" in tree["shards/shard_1"].children
    outside = next(c for c in manifest["campaigns"] if c not in how["population_members"])
    report = tmp_path / "report.html"
    assert cli.main(["report", str(out), "--out", str(report), "--campaign", outside, "--date", "2026-03-02"]) == 0
    assert outside in report.read_text()


def test_a_shard_whose_worker_dies_runs_again_on_another(fitted, tmp_path):
    """A worker killed while it fits a shard: Dask runs the shard again elsewhere, and the cache is
    complete (every campaign, each once) and correct: the same draws as a run nobody interrupted."""
    from gaelp_bayes.cluster import DaskRunner

    cells = data.aggregate(data.load_windows(fitted.train_csv))
    killed = {}

    def kill_a_worker_fitting_a_shard(runner, deadline):
        while time.time() < deadline and not killed:
            for worker, keys in runner.client.processing().items():
                if any("shard-1" in str(key) for key in keys):
                    pid = runner.client.run(os.getpid, workers=[worker])[worker]
                    time.sleep(1.0)  # well into the shard's sampling
                    os.kill(pid, signal.SIGKILL)
                    killed["pid"] = pid
                    return
            time.sleep(0.05)

    with DaskRunner(workers=2) as runner:
        thread = threading.Thread(target=kill_a_worker_fitting_a_shard, args=(runner, time.time() + 300))
        thread.start()
        fitted_sharded = sharded.fit_sharded(cells, population_size=2, shard_size=1, runner=runner, seed=5,
                                             progress=False)
        thread.join()
        (tmp_path / "spill").mkdir()
        uninterrupted = sharded.fit_sharded(cells, population_size=2, shard_size=1, runner=runner, seed=5,
                                            progress=False, spill=tmp_path / "spill")  # shards read from disk
    assert killed, "no worker was killed: the test did not test anything"
    path = cache.write(tmp_path / "m", fitted_sharded, cells)
    manifest, arrays = cache.read_runtime(path)
    assert arrays["cvr"].shape[1] == len(cells.campaigns) + 1 and np.isfinite(arrays["cvr"]).all()
    _, expected = cache.read_runtime(cache.write(tmp_path / "uninterrupted", uninterrupted, cells))
    assert all(np.array_equal(arrays[key], expected[key]) for key in expected)
    shards = json.loads((path / "manifest.json").read_text())["settings"]["sharded"]["shards"]
    assert len(shards) == 1 and len(shards[0]) == 1


def test_sharding_options_are_checked_before_the_data_loads(capsys):
    from gaelp_bayes.model import config

    parse = cli.build_parser().parse_args
    assert cli.sharding(parse(["fit", "w.csv", "--out", "m"])) is None
    assert cli.sharding(parse(["fit", "w.csv", "--out", "m", "--workers", "2"])) == {"workers": 2}
    assert cli.main(["fit", "missing.csv", "--out", "m", "--population-size", "4"]) == 2
    assert "--population-size needs --workers" in capsys.readouterr().err
    assert cli.main(["fit", "w.csv", "--out", "m", "--workers", "2", "--scheduler", "tcp://h:8786"]) == 2
    assert cli.main(["fit", "missing.csv", "--out", "m", "--shard-size", "4", "--population-size", "1"]) == 2
    assert "--population-size: must be a whole number >= 2" in capsys.readouterr().err
    assert cli.main(["simulate", "--population-size", "4", "--out", "never"]) == 2  # simulate fits as fit does
    assert "--population-size needs --workers" in capsys.readouterr().err
    help_text = {a.dest: a.help for a in cli.build_parser()._subparsers._group_actions[0].choices["fit"]._actions}
    assert f"(default {config.SHARD_SIZE})" in help_text["shard_size"]
    assert f"(default {config.POPULATION_SIZE})" in help_text["population_size"]


def test_shards_run_in_this_process_with_shard_size_alone(fitted, tmp_path):
    out = tmp_path / "m"
    code = cli.main(["fit", str(fitted.train_csv), "--out", str(out), *SHARDED, "--engine", "nuts", "--draws", "200",
                     "--tune", "200", "--chains", "2", "--quiet"])
    manifest = cache.read_manifest(out)
    assert code in (0, 4) and manifest["settings"]["sharded"]["runner"] == "in process"
    assert manifest["runtime_draws"] == 400 and len(manifest["settings"]["sharded"]["seconds"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the shards' spill folder is gone
