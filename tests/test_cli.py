import subprocess
import sys

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


def test_quickstart_finds_its_configs_from_any_directory(tmp_path, monkeypatch):
    from pathlib import Path

    from twinml.cli import _quickstart_config, _repo_default

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    for name in ("configs/quickstart.yaml", "configs/audit_policy.yaml"):
        assert _repo_default(Path(name)) == repo / name
    cfg = _quickstart_config(_repo_default(Path("configs/quickstart.yaml")), tmp_path / "w", 100, "lightgbm")
    assert cfg["model"]["kind"] == "lightgbm" and cfg["data"]["simulator"]["n_subjects"] == 100
    # a path of the user's own is never swapped for the tree's: here first, else as given (and then the clear error)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("name: mine\n")
    assert _repo_default(Path("configs/quickstart.yaml")) == Path("configs/quickstart.yaml")
    assert _repo_default(Path("mine/quickstart.yaml")) == Path("mine/quickstart.yaml")
