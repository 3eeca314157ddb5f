"""The ``twinml`` command line: a thin layer over the Python API.

Each command declares its options, calls one function of the Python API and one renderer of
``_cli_tables``. Heavy libraries (mlflow, sklearn, pandas) are imported inside each command so that
``twinml --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ._cli_app import TRACKING_HELP as _TRACKING_HELP
from ._cli_app import app
from ._cli_app import run as _run
from ._cli_tables import _console


@app.command()
def simulate(
    n_subjects: int = typer.Option(10_000, "--n-subjects", help="Number of patients."),
    seed: int = typer.Option(0, help="Random seed; the output is deterministic given it."),
    out: Path = typer.Option(..., "--out", help="MEDS directory to write."),
    years: int = typer.Option(10, help="Length of the recorded period."),
    bias_group: str | None = typer.Option(None, help="Group for the bias knobs, e.g. RACE//Black."),
    underdiagnosis_rate: float = typer.Option(0.0, help="Share of T2D/CKD diagnoses never recorded in the group."),
    visit_rate_ratio: float = typer.Option(1.0, help="Visit rate of the group relative to others."),
    treatment_effect_scale: float = typer.Option(1.0, help="Multiplies every treatment's effect (0: inert)."),
    treatment_rate_scale: float = typer.Option(1.0, help="Multiplies the prescribing policy's start probabilities."),
    treatment_decisions: str = typer.Option(
        "visits", help="visits, or yearly_review (treatments start only at yearly reviews, the ground-truth times)."
    ),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    drift: Path | None = typer.Option(
        None,
        "--drift",
        help="YAML of shifts planted from a year on, to test a monitor: from_year, visit_rate_ratio, "
        "hazard_ratio, lab_offset, recode (see README, The simulator).",
    ),
):
    """Simulate patients whose true risks are known; write MEDS + ground truth."""

    def body():
        from ._cli_tables import _print_simulated
        from .pipeline import Progress
        from .simulate import simulate_to

        say = Progress(_console().print)
        cohort = simulate_to(
            out,
            overwrite=overwrite,
            n_subjects=n_subjects,
            seed=seed,
            years=years,
            bias_group=bias_group,
            underdiagnosis_rate=underdiagnosis_rate,
            visit_rate_ratio=visit_rate_ratio,
            treatment_effect_scale=treatment_effect_scale,
            treatment_rate_scale=treatment_rate_scale,
            treatment_decisions=treatment_decisions,
            drift=drift,
            progress=say,
        )
        _print_simulated(cohort, out, say)

    _run(body)


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="The export: a directory or file."),
    source: str = typer.Option(
        ...,
        "--source",
        help="fhir (bundles or bulk NDJSON, optionally .gz), "
        "synthea-csv, omop (CDM v5.4 tables as CSV/Parquet) or meds (validate only).",
    ),
    source_namespace: list[str] = typer.Option(
        [],
        "--source-namespace",
        help="OMOP: TABLE=VOCAB codes that table's source values as VOCAB/value, e.g. condition_occurrence=ICD10CM.",
    ),
    out: Path | None = typer.Option(None, "--out", help="MEDS directory to write (not for --source meds)."),
    reference_time: str | None = typer.Option(None, help="Events after it are future-dated (default: now)."),
    seed: int = typer.Option(0, help="Seed of the subject-level splits."),
    pseudonymise: bool = typer.Option(
        False,
        help="Replace subject ids by a keyed hash (key from "
        "$TWINML_PSEUDONYM_KEY or --key-file; never written anywhere).",
    ),
    key_file: Path | None = typer.Option(None, help="File holding the pseudonymisation key."),
    chunk_rows: int = typer.Option(500_000, help="Source rows read at a time (bounds memory)."),
    bucket_rows: int = typer.Option(1_000_000, help="Rough rows per subject bucket gated at once (bounds memory)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
):
    """Bring records in as MEDS through the data-quality gate; print what was kept and quarantined."""

    def body():
        from ._cli_tables import _print_ingest
        from .ingest import ingest as run
        from .ingest import load_pseudonym_key, parse_source_namespaces
        from .pipeline import Progress

        key = load_pseudonym_key(key_file=key_file) if (pseudonymise or key_file) else None
        report = run(
            source,
            path,
            out,
            reference_time=reference_time,
            seed=seed,
            pseudonym_key=key,
            source_namespaces=parse_source_namespaces(source_namespace),
            overwrite=overwrite,
            chunk_rows=chunk_rows,
            bucket_rows=bucket_rows,
            progress=Progress(_console().print),
        )
        _print_ingest(report)

    _run(body)


@app.command()
def train(
    config: Path = typer.Argument(..., help="Experiment YAML (see configs/)."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
    overwrite_data: bool = typer.Option(False, help="Re-simulate data.path even if it exists."),
    predictions_dir: Path | None = typer.Option(
        None, "--predictions-dir", help="Also write the evaluated splits' predictions here, as MEDS prediction files."
    ),
    overwrite: bool = typer.Option(False, help="Replace --predictions-dir if it exists."),
):
    """Train the configured model as one MLflow run and print its metrics."""

    def body():
        from ._cli_tables import _print_train
        from .config import load_config
        from .pipeline import Progress
        from .pipeline import train as run

        cfg = load_config(config)
        res = run(
            cfg,
            tracking_uri=tracking_uri,
            config_text=config.read_text(),
            overwrite_data=overwrite_data,
            predictions_dir=predictions_dir,
            overwrite=overwrite,
            progress=Progress(_console().print),
        )
        _print_train(res, cfg)

    _run(body)


@app.command()
def evaluate(
    model: str = typer.Option(..., "--model", help="Model URI, e.g. runs:/<run_id>/model or models:/name@alias."),
    events: Path = typer.Option(..., "--events", help="MEDS directory."),
    task: Path = typer.Option(..., "--task", help="Task YAML, or an experiment YAML with a task: section."),
    split: str = typer.Option("held_out", help="Which split's labels to score."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
    n_bootstrap: int = typer.Option(200, help="Bootstrap resamples for the intervals."),
    predictions_dir: Path | None = typer.Option(
        None,
        "--predictions-dir",
        help="Write the predictions here, as MEDS prediction files ({split}/{label}.parquet).",
    ),
    overwrite: bool = typer.Option(False, help="Replace --predictions-dir if it exists."),
):
    """Score a logged model on a MEDS dataset and print discrimination and calibration."""

    def body():
        from ._cli_tables import _print_metrics
        from .cohort import load_task
        from .pipeline import Progress
        from .pipeline import evaluate as run

        table = run(
            model,
            meds_dir=events,
            task=load_task(task),
            split=split,
            tracking_uri=tracking_uri,
            n_boot=n_bootstrap,
            predictions_dir=predictions_dir,
            overwrite=overwrite,
            progress=Progress(_console().print),
        )
        _print_metrics(table, title=f"{model} on {events} ({split})")

    _run(body)


@app.command()
def audit(
    model: str = typer.Option(..., "--model", help="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model."),
    events: Path = typer.Option(..., "--events", help="MEDS directory with the subjects to audit on."),
    policy: Path | None = typer.Option(
        None, "--policy", help="Audit policy YAML (default: built-in defaults, see configs/audit_policy.yaml)."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for report.html, audit.json, model_card.md."),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Experiment YAML giving the task (default: the config logged with the model's training run).",
    ),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
):
    """Audit a model: calibration, subgroup fairness, explanations, policy gates; exit 1 if a gate fails."""

    def body():
        from ._cli_tables import _print_audit
        from .audit import load_policy, run_audit
        from .config import load_config
        from .pipeline import Progress

        res = run_audit(
            model,
            events,
            policy=load_policy(policy),
            out=out,
            overwrite=overwrite,
            config=load_config(config) if config else None,
            tracking_uri=tracking_uri,
            progress=Progress(_console().print),
        )
        _print_audit(res)
        return res

    res = _run(body)
    if not res.passed:
        raise typer.Exit(code=1)


@app.command()
def whatif(
    model: str = typer.Option(
        ...,
        "--model",
        help="A model trained with model.kind whatif: models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model.",
    ),
    events: Path = typer.Option(..., "--events", help="MEDS directory holding the patients."),
    subjects: str = typer.Option(..., "--subjects", help="Comma-separated subject ids."),
    plans: Path | None = typer.Option(
        None,
        "--plans",
        help="Plans YAML (default: the plans the model was "
        "trained on); matched to the model's plans by what they start.",
    ),
    at: str | None = typer.Option(
        None, "--at", help="Prediction time (default: each subject's last event); later events are ignored."
    ),
    out: Path = typer.Option(Path("runs/whatif"), "--out", help="Directory for whatif.csv and the risk-curve PNGs."),
    html_report: bool = typer.Option(False, "--html", help="Also write report.html with the plots and tables."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
):
    """Risk of each outcome under each treatment plan, with bands and support flags, for chosen patients."""

    def body():
        from ._cli_tables import _print_whatif_written
        from .whatif import what_if_from_uri

        result = what_if_from_uri(
            model,
            events,
            subjects,
            out,
            at=at,
            plans=plans,
            html_report=html_report,
            overwrite=overwrite,
            tracking_uri=tracking_uri,
        )
        _print_whatif_written(result, out, html_report)

    _run(body)


@app.command()
def twin(
    model: str = typer.Option(..., "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a path."),
    events: Path = typer.Option(..., "--events", help="MEDS directory holding the patient."),
    subject: int = typer.Option(..., "--subject", help="The subject id."),
    plans: Path | None = typer.Option(
        None, "--plans", help="What-if models: plans YAML to compare (default: the plans the model was trained on)."
    ),
    at: str | None = typer.Option(
        None,
        "--at",
        help="Prediction time (default: the subject's last event); later events are neither shown nor used.",
    ),
    out: Path = typer.Option(Path("runs/twin"), "--out", help="Directory for twin.html and its tables (CSV)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
):
    """One patient's twin as a self-contained HTML page: record, risk, trajectories, what-if, drivers."""

    def body():
        from .pipeline import Progress
        from .twinpage import twin_page_from_uri

        path = twin_page_from_uri(
            model,
            events,
            subject,
            out,
            at=at,
            plans=plans,
            overwrite=overwrite,
            tracking_uri=tracking_uri,
            progress=Progress(_console().print),
        )
        _console().print(f"wrote {path / 'twin.html'} (and its tables as CSV in {path})")

    _run(body)


@app.command()
def quickstart(
    config: Path | None = typer.Option(None, help="Base experiment YAML (default: the packaged quickstart.yaml)."),
    workdir: Path = typer.Option(Path("runs/quickstart"), help="Where the simulated data and the reports go."),
    n_subjects: int = typer.Option(6_000, help="Cohort size."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
    policy: Path | None = typer.Option(
        None, help="Audit policy for the lightgbm model (default: the packaged demo policy)."
    ),
):
    """Simulate a cohort; train logistic, LightGBM, a record GRU and a what-if model; print model vs oracle;
    audit the LightGBM model; show one patient's what-if; say what to open next."""

    def body():
        from ._cli_tables import _print_quickstart_result
        from .pipeline import Progress
        from .quickstart import run_quickstart

        res = run_quickstart(
            workdir=workdir,
            n_subjects=n_subjects,
            tracking_uri=tracking_uri,
            config=config,
            policy=policy,
            progress=Progress(_console().print),
        )
        _print_quickstart_result(res, n_subjects)

    _run(body)


from . import _cli_operate  # noqa: E402, F401  (registers score, update, promote, monitor)


def main():
    app(prog_name="twinml")


if __name__ == "__main__":
    sys.exit(main())
