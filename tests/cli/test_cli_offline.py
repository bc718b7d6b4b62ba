"""The offline CLI end to end on data the test makes itself: train -> evaluate -> export ->
evaluate through the bundle, with the bundle's metrics equal to the checkpoint's."""
import json
import subprocess
import sys

import pytest

from streamrec.model.synth import CSV_COLUMNS, write_csv
from tests.factories import small_events


def streamrec(*args, check=True):
    return subprocess.run([sys.executable, "-m", "streamrec.cli.main", *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_csv(small_events(users=250, items=100, seed=5), tmp_path_factory.mktemp("d") / "events.csv")


def test_train_evaluate_export_and_bundle_parity(data, tmp_path):
    flags = ["--data", data, "--format", "csv", "--columns", CSV_COLUMNS, "--protocol", "temporal"]
    run = tmp_path / "run"
    out = streamrec("train", *flags, "--out", run, "--epochs", "3", "--dim", "16", "--hidden", "24", "--json")
    trained = json.loads(out.stdout.strip().splitlines()[-1])
    assert (run / "model.pt").exists() and (run / "training_curve.png").stat().st_size > 5000
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"]["n_targets"] == trained["n_targets"] > 100
    assert {"MostPopular", "Markov", "RecentPopular-1d"} <= set(trained["baselines"])

    ev = json.loads(streamrec("evaluate", "--model", run, *flags, "--json").stdout)
    assert ev["model"]["NDCG@10"] == pytest.approx(trained["model"]["NDCG@10"], abs=1e-9)

    bundle = tmp_path / "bundle"
    exp = streamrec("export", "--model", run, "--out", bundle, "--k", "20", "--m", "200")
    assert "MISMATCH" not in exp.stdout and (bundle / "manifest.json").exists()
    ev_b = json.loads(streamrec("evaluate", "--bundle", bundle, *flags, "--mask", "history", "--json").stdout)
    assert ev_b["n_targets"] == ev["n_targets"]
    for key in ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20", "MRR@20"):
        assert round(ev_b["model"][key], 4) == round(ev["model"][key], 4), key
    assert ev_b["baselines"]["Markov"] == ev["baselines"]["Markov"]

    # the serving rule (the bundle's default): the same through the checkpoint and the bundle,
    # and different from the history rule on this data, whose browse->click repeats it drops
    serve_b = json.loads(streamrec("evaluate", "--bundle", bundle, *flags, "--no-baselines", "--json").stdout)
    serve_m = json.loads(streamrec("evaluate", "--model", run, *flags, "--mask", "serving", "--m", "200",
                                   "--no-baselines", "--json").stdout)
    for key in ("HR@10", "NDCG@10", "MRR@10", "HR@20", "NDCG@20"):
        assert round(serve_b["model"][key], 4) == round(serve_m["model"][key], 4), key
    assert serve_b["model"]["HR@10"] < ev["model"]["HR@10"]


def test_train_with_sampled_negatives_exports(data, tmp_path):
    """--negatives reaches the training config (the loss itself learns: tests/model/test_sampled.py), is
    recorded with the metrics, changes nothing of what is exported (the bundle passes the parity gate),
    and is refused beside the transition prior it does not support."""
    flags = ["--data", data, "--format", "csv", "--columns", CSV_COLUMNS, "--protocol", "temporal"]
    run = tmp_path / "run"
    out = streamrec("train", *flags, "--out", run, "--epochs", "3", "--dim", "16", "--hidden", "24",
                    "--negatives", "16", "--json")
    trained = json.loads(out.stdout.strip().splitlines()[-1])
    assert json.loads((run / "metrics.json").read_text())["train_config"]["negatives"] == 16
    assert trained["n_targets"] > 100 and 0 < trained["model"]["NDCG@10"] <= 1
    exp = streamrec("export", "--model", run, "--out", tmp_path / "bundle", "--k", "20", "--m", "50")
    assert "MISMATCH" not in exp.stdout and (tmp_path / "bundle" / "manifest.json").exists()
    r = streamrec("train", *flags, "--out", tmp_path / "x", "--negatives", "16", "--transitions", "8", check=False)
    assert r.returncode != 0 and "transitions" in r.stderr


def test_train_with_attention_exports(data, tmp_path):
    """--attention reaches the model config saved in the checkpoint and metrics.json, the checkpoint
    exports with the default seen window (m=50) into a bundle that takes the window input, export
    refuses a seen window smaller than the attention window (serving takes it from there), and a
    negative or non-numeric value is refused up front, saying why, before any data is read."""
    from streamrec.model import checkpoint

    flags = ["--data", data, "--format", "csv", "--columns", CSV_COLUMNS, "--protocol", "temporal"]
    run = tmp_path / "run"
    streamrec("train", *flags, "--out", run, "--epochs", "2", "--dim", "16", "--hidden", "24",
              "--attention", "4", "--no-baselines", "--json")
    assert json.loads((run / "metrics.json").read_text())["config"]["attention"] == 4
    assert checkpoint.load(run).model.cfg.attention == 4
    exp = streamrec("export", "--model", run, "--out", tmp_path / "bundle", "--k", "20")
    assert "MISMATCH" not in exp.stdout
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["attention"] == 4
    small = streamrec("export", "--model", run, "--out", tmp_path / "small", "--m", "3", check=False)
    assert small.returncode != 0 and "--m 4 or more" in small.stdout + small.stderr
    assert not (tmp_path / "small" / "manifest.json").exists()
    r = streamrec("train", *flags, "--out", tmp_path / "x", "--attention", "-1", check=False)
    assert r.returncode == 2 and "0 turns attention off" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()
    r = streamrec("train", *flags, "--out", tmp_path / "x", "--attention", "two", check=False)
    assert r.returncode == 2 and "whole number" in r.stderr


def test_clear_errors(tmp_path, data):
    r = streamrec("evaluate", "--model", tmp_path / "nope", "--data", data, "--format", "csv",
                  "--columns", CSV_COLUMNS, check=False)
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = streamrec("train", "--data", tmp_path / "missing.csv", "--format", "csv", "--out", tmp_path / "o", check=False)
    assert r.returncode == 2 and "no such file" in r.stderr
    r = streamrec("evaluate", "--bundle", tmp_path, "--data", data, "--format", "csv", "--columns", CSV_COLUMNS,
                  check=False)
    assert r.returncode == 2 and "not a bundle" in r.stderr
