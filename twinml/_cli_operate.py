"""The operator's commands of the ``twinml`` CLI: score a panel, advance its twins, promote a model,
monitor the panel it scores, recalibrate it. Registered on the same app as :mod:`twinml.cli`; thin in the same way:
each declares its options, calls one function of the Python API and one renderer of ``_cli_tables``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._cli_app import TRACKING_HELP as _TRACKING_HELP
from ._cli_app import app
from ._cli_app import run as _run
from ._cli_tables import _console


@app.command()
def score(
    model: str = typer.Option(..., "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a path."),
    events: Path = typer.Option(..., "--events", help="MEDS directory of the panel to score."),
    as_of: str = typer.Option(..., "--as-of", help="Score at this date/time; later events are ignored."),
    out: Path = typer.Option(..., "--out", help="Parquet file to write (atomically)."),
    engine: str = typer.Option("local", help="local, or spark (needs Java and pyspark)."),
    spark_master: str | None = typer.Option(None, help="Spark master URL (default local[*])."),
    subjects_per_slice: int = typer.Option(20_000, help="Local engine: whole subjects scored at once (bounds memory)."),
    state: Path | None = typer.Option(
        None,
        "--state",
        help="Also save each subject's twin state in this directory "
        "(a record model, local engine), for `twinml update`.",
    ),
    trajectories: Path | None = typer.Option(
        None,
        "--trajectories",
        help="Also write each scored subject's "
        "lab trajectory forecasts (long format) to this Parquet file "
        "(a sequence model with a trajectory head, local engine).",
    ),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
    overwrite: bool = typer.Option(False, help="Replace OUT (and the state or trajectories) if it exists."),
    override: str | None = typer.Option(
        None, "--override", help="Score a version whose artifacts changed since its audit; recorded on it."
    ),
):
    """Score every subject of a MEDS panel at an as-of time with a registered model."""

    def body():
        from ._cli_tables import _print_score
        from .pipeline import Progress
        from .scoring import score as run

        report = run(
            model,
            events,
            as_of,
            out,
            engine=engine,
            spark_master=spark_master,
            tracking_uri=tracking_uri,
            subjects_per_slice=subjects_per_slice,
            overwrite=overwrite,
            state_dir=state,
            trajectories=trajectories,
            override=override,
            progress=Progress(_console().print),
        )
        _print_score(report)

    _run(body)


@app.command()
def update(
    model: str = typer.Option(..., "--model", help="The model that made the state (models:/..., runs:/... or a path)."),
    state: Path = typer.Option(
        ..., "--state", help="Twin state directory from `twinml score --state`; advanced in place."
    ),
    events: Path = typer.Option(..., "--events", help="MEDS directory of the events since the state was saved."),
    as_of: str = typer.Option(..., "--as-of", help="Advance to this date/time; later events are not read."),
    out: Path = typer.Option(..., "--out", help="Parquet scores of the subjects the new events touch (atomic)."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
):
    """Advance the twins of a scored panel over new events; score only the subjects they touch."""

    def body():
        from ._cli_tables import _print_update
        from .pipeline import Progress
        from .scoring import update as run

        report = run(
            model,
            state,
            events,
            as_of,
            out,
            tracking_uri=tracking_uri,
            overwrite=overwrite,
            progress=Progress(_console().print),
        )
        _print_update(report, out)

    _run(body)


@app.command()
def promote(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Option(..., "--version", help="Model version to promote."),
    alias: str = typer.Option("champion", "--alias", help="Alias to point at the version."),
    override: str | None = typer.Option(
        None,
        "--override",
        help="Promote without a passed audit, or a version changed since it; the reason is recorded on the version.",
    ),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
):
    """Point an alias at a model version, only if its audit gates passed (or with a recorded override)."""

    def body():
        from ._cli_tables import _print_promoted
        from .tracking import promote as run

        _print_promoted(name, alias, run(name, version, alias, override_reason=override, tracking_uri=tracking_uri))

    _run(body)


@app.command()
def monitor(
    reference: list[Path] = typer.Option(
        [], "--reference", help="What the model was validated on: a MEDS directory and/or a scores file (repeat)."
    ),
    current: list[Path] = typer.Option(
        [], "--current", help="The panel being scored now: a MEDS directory and/or a scores file (repeat)."
    ),
    history: list[Path] = typer.Option(
        [], "--history", help="Earlier scores files (repeat): with --outcomes, performance over time."
    ),
    outcomes: Path | None = typer.Option(None, "--outcomes", help="MEDS directory with the outcomes since then."),
    config: Path | None = typer.Option(
        None, "--config", help="Experiment YAML giving the task (default: the model's training config)."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for report.html and monitor.json."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="The model being monitored (models:/NAME/VERSION or @ALIAS): the run is logged against it.",
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="Monitoring policy YAML (default: built-in, see configs/monitor_policy.yaml)."
    ),
    reference_as_of: str | None = typer.Option(None, help="As-of date of a reference MEDS directory."),
    current_as_of: str | None = typer.Option(None, help="As-of date of a current MEDS directory."),
    experiment: str = typer.Option("twinml", help="MLflow experiment of the monitoring run."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
):
    """Compare the panel being scored with the reference: input and output drift, new codes; exit 1 if a gate fails."""

    def body():
        from ._cli_tables import _print_monitor
        from .config import load_config
        from .monitoring import load_monitor_policy, run_monitor
        from .pipeline import Progress

        res = run_monitor(
            reference or None,
            current or None,
            history=history,
            outcomes=outcomes,
            task=load_config(config).task if config else None,
            out=out,
            model_uri=model,
            policy=load_monitor_policy(policy),
            reference_as_of=reference_as_of,
            current_as_of=current_as_of,
            tracking_uri=tracking_uri,
            experiment=experiment,
            overwrite=overwrite,
            progress=Progress(_console().print),
        )
        _print_monitor(res)
        return res

    res = _run(body)
    if not res.passed:
        raise typer.Exit(code=1)


@app.command()
def recalibrate(
    model: str = typer.Option(..., "--model", help="models:/NAME/VERSION or models:/NAME@ALIAS of a risk model."),
    events: Path = typer.Option(..., "--events", help="MEDS directory with recent records and their outcomes."),
    start: str | None = typer.Option(None, "--from", help="First prediction time used (default: a year before --to)."),
    end: str | None = typer.Option(
        None, "--to", help="Last prediction time used (default: a horizon before the data end)."
    ),
    slope: bool = typer.Option(False, help="Fit a slope as well as the intercept (default: a hazard ratio only)."),
    register_as: str | None = typer.Option(None, help="Registered model name (default: the model's own)."),
    tracking_uri: str | None = typer.Option(None, help=_TRACKING_HELP),
):
    """Refit a model's calibration on recent labelled data; register it as a new version with its lineage."""

    def body():
        from ._cli_tables import _print_recalibrated
        from .monitoring import recalibrate as run
        from .pipeline import Progress

        report = run(
            model,
            events,
            start=start,
            end=end,
            slope=slope,
            register_as=register_as,
            tracking_uri=tracking_uri,
            progress=Progress(_console().print),
        )
        _print_recalibrated(report)

    _run(body)
