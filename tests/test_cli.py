import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinml.cli import app

runner = CliRunner()


def test_help_lists_the_commands_and_stays_light():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("simulate", "ingest", "train", "evaluate", "score", "promote", "audit", "whatif", "quickstart"):
        assert cmd in res.output
    # importing the CLI must not pull the heavy stack
    code = "import sys, twinml.cli; print(any(m in sys.modules for m in ('mlflow', 'sklearn', 'torch', 'shap')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_simulate_writes_a_meds_directory(tmp_path):
    out = tmp_path / "meds"
    res = runner.invoke(app, ["simulate", "--n-subjects", "60", "--seed", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "metadata" / "dataset.json").exists() and (out / "truth" / "ground_truth.parquet").exists()
    again = runner.invoke(app, ["simulate", "--n-subjects", "60", "--out", str(out)])
    # refused before simulating: the error is all it prints
    assert again.exit_code == 2
    assert again.output.splitlines() == [f"error: {out} exists; pass overwrite=True (CLI: --overwrite) to replace it."]


def test_train_refuses_an_existing_predictions_dir_before_any_work(tmp_path):
    cfg, preds = tmp_path / "exp.yaml", tmp_path / "preds"
    cfg.write_text(
        f"name: x\ndata: {{path: {tmp_path / 'never-simulated'}}}\n"
        "task: {name: t, outcomes: {mi: {codes: [X]}}, horizons_days: [365]}\n"
    )
    preds.mkdir()
    res = runner.invoke(app, ["train", str(cfg), "--predictions-dir", str(preds)])
    assert res.exit_code == 2
    assert res.output.splitlines() == [f"error: {preds} exists; pass overwrite=True (CLI: --overwrite) to replace it."]
    assert not (tmp_path / "never-simulated").exists()  # nothing simulated


def test_bad_config_is_one_clear_line_and_exit_code_2(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "name: x\ndata: {path: nowhere}\ntask: {name: t, outcomes: {mi: {codes: [X]}}, horizons_days: [-30]}\n"
    )
    res = runner.invoke(app, ["train", str(cfg)])
    assert res.exit_code == 2
    assert "task.horizons_days: must be positive ints. Got -30 instead; got [-30]" in res.output
    assert "Traceback" not in res.output


def test_quickstart_ships_its_config_policy_and_plans(tmp_path, monkeypatch):
    """Run from anywhere: the quickstart reads nothing relative to the working directory, and every model's
    config it builds, the demo policy and the plans load."""
    from twinml.audit import load_policy
    from twinml.cohort import load_plans
    from twinml.config import load_config
    from twinml.quickstart import DEMO_POLICY, MODELS, QUICKSTART_CONFIG, QUICKSTART_PLANS, quickstart_config

    monkeypatch.chdir(tmp_path)
    for f in (QUICKSTART_CONFIG, DEMO_POLICY, QUICKSTART_PLANS):
        assert f.is_absolute() and f.parent.name == "resources" and f.parent.parent.name == "twinml"
    for name, model in MODELS.items():
        cfg = load_config(quickstart_config(tmp_path / "w", 100, name, model))
        assert cfg.model.kind == model["kind"] and cfg.data.simulator.n_subjects == 100
        assert Path(cfg.data.path) == tmp_path / "w" / "meds"
    off = [k for k, v in load_policy(DEMO_POLICY).gates.model_dump().items() if v is None]
    assert sorted(off) == ["max_subgroup_auroc_gap", "min_true_risk_ratio"]
    assert load_plans(QUICKSTART_PLANS).names[0] == "no_new_treatment"
    res = runner.invoke(app, ["quickstart", "--config", "nope.yaml"])
    assert res.exit_code == 2
    assert res.output.splitlines() == ["error: nope.yaml: quickstart config not found (pass --config)."]


def test_the_quickstart_resources_are_in_the_wheel(tmp_path):
    """After a plain ``pip install`` (a wheel, not this source tree) the packaged YAML files are there."""
    import shutil
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(repo / "twinml", src / "twinml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo / "pyproject.toml", src)
    shutil.copy(repo / "README.md", src)
    code = "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("twinml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("quickstart.yaml", "quickstart_policy.yaml", "plans.yaml"):
        assert f"twinml/resources/{f}" in names


@pytest.mark.slow
def test_quickstart_end_to_end_from_another_directory(tmp_path):
    """The newcomer's run, from a directory with no configs/: the baselines and the GRU against the oracle,
    one patient's what-if beside the simulator's truth, the demo audit, the three things to open next, and
    no third-party progress bars or log lines."""
    code = "from twinml.cli import main; main()"
    args = ["quickstart", "--n-subjects", "1500", "--workdir", "w"]
    # the default store, here: not a URI an earlier test's mlflow.set_tracking_uri left in the environment
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    # the table fits an 80-column terminal: every header whole
    lines = out.splitlines()
    k = next(i for i, line in enumerate(lines) if line.split()[:2] == ["label", "AUROC"])
    assert lines[k - 1].split() == ["oracle", "logistic", "logistic", "lightgbm", "lightgbm", "GRU", "GRU"]
    assert lines[k].split() == ["label", "AUROC", "AUROC", "ECE", "AUROC", "ECE", "AUROC", "ECE"]
    assert lines[k + 2].split()[0] == "t2d_365d" and len(lines[k + 2].split()) == 8
    assert "the twin (90% band) vs the simulator's truth" in out
    assert re.search(r"the true 365-day effect lies inside the twin's band for \d+%", out)
    assert "audit of the lightgbm model: " in out and "demo policy: gates off because 1,500 simulated" in out
    tail = out[out.index("open next:") :].splitlines()
    assert tail[1].split() == [
        "1.",
        "the",
        "runs:",
        "mlflow",
        "ui",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
    ]
    assert tail[2].endswith(str(tmp_path / "w" / "audit" / "report.html"))
    assert tail[3].endswith(str(tmp_path / "w" / "whatif" / "report.html"))
    assert (tmp_path / "w" / "audit" / "report.html").exists() and (tmp_path / "w" / "whatif" / "report.html").exists()
    for noise in ("Downloading artifacts", " INFO ", "WARNING", "%|"):
        assert noise not in out
