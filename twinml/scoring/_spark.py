"""The Spark engine: the same :func:`score_events` over subject-partitioned groups, via ``applyInPandas``.

Events are read by Spark from the MEDS shard files, hashed by subject into groups (every event
of a subject lands in one group), and each group is scored in a Python worker that loads the
model once. Needs Java (Spark 4 wants Java 17 or newer) and the ``pyspark`` package.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import warnings

import pyarrow.parquet as pq

from .._validation import ConfigError
from ._score import _EVENT_COLUMNS, data_files, score_events, typed_events

__all__ = ["score_spark", "spark_available"]

_WORKER_MODELS: dict = {}
ROWS_PER_GROUP = 1_000_000


def spark_available() -> str | None:
    """None when Spark can run here, else the reason it cannot."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'twinml[spark]')"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "Java is not installed (Spark needs Java 17 or newer on PATH or JAVA_HOME)"
    return None


def _session(master):
    from pyspark.sql import SparkSession

    master = master or "local[*]"
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        # local workers run this interpreter (the one with twinml); on a cluster, set PYSPARK_PYTHON
        os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = SparkSession.builder
    if master.startswith("local"):
        # in local mode the driver JVM does the shuffle and the per-group sort: give it room (default 1g spills)
        builder = builder.config("spark.driver.memory", os.environ.get("TWINML_SPARK_DRIVER_MEMORY", "4g"))
    return (
        builder.master(master)
        .appName("twinml-score")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .getOrCreate()
    )


def _worker_model(uri, tracking_uri):
    """The model inside a Python worker, loaded once per worker process."""
    key = (uri, tracking_uri)
    if key not in _WORKER_MODELS:
        from ..tracking import load_registered_model

        model = load_registered_model(uri, tracking_uri=tracking_uri).model
        # one torch thread per task (Spark sets OMP_NUM_THREADS to the task's cores): a model trained
        # with n_threads=2 would oversubscribe the cores with its sibling workers, and OpenMP's spinning
        # threads then made the GRU 15-50x slower (measured); a blend runs its GRUs with its first GRU's
        torch_model = model.record_ if hasattr(model, "record_") else model
        if hasattr(torch_model, "n_threads"):
            torch_model.n_threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
        _WORKER_MODELS[key] = model
    return _WORKER_MODELS[key]


def score_spark(loaded, events_dir, as_of, *, master=None, partitions=None, say=print):
    """Scores (pandas, one row per subject) and the number of events read, computed by Spark."""
    from pyspark.sql import functions as F

    from ..tracking import active_tracking_uri

    reason = spark_available()
    if reason:
        raise ConfigError(f"score --engine spark: {reason}.")
    files = data_files(events_dir)
    n_events = sum(pq.read_metadata(f).num_rows for f in files)
    groups = partitions or max(2, math.ceil(n_events / ROWS_PER_GROUP))
    uri = f"models:/{loaded.name}/{loaded.version}" if loaded.version else loaded.uri
    tracking_uri = active_tracking_uri()  # the URI the model was loaded from
    labels = list(loaded.model.label_columns_)
    schema = ", ".join(["subject_id long", "status string"] + [f"`{c}` double" for c in labels])

    def score_group(pdf):
        pdf = typed_events(pdf)
        # the shuffle scatters a subject's events: back to subject then time (ties: the featurizer orders them)
        pdf = pdf.sort_values(["subject_id", "time"], na_position="first", kind="stable").reset_index(drop=True)
        return score_events(_worker_model(uri, tracking_uri), pdf, as_of)

    spark = _session(master)
    spark.conf.set("spark.sql.shuffle.partitions", str(groups))  # one shuffle partition per subject group
    say(f"spark {spark.sparkContext.master}: {n_events:,} events in {groups} subject groups")
    events = spark.read.parquet(*[str(f) for f in files]).select(*_EVENT_COLUMNS)
    grouped = events.withColumn("_group", F.pmod(F.xxhash64("subject_id"), F.lit(groups)))
    with warnings.catch_warnings():
        # pyspark 4.3 warns that pandas 3 is "not fully supported"; the engines' equality is tested
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        scores = grouped.groupBy("_group").applyInPandas(lambda pdf: score_group(pdf.drop(columns="_group")), schema)
        out = scores.toArrow().to_pandas()  # (toPandas passes pandas 3 a deprecated keyword)
    say(f"spark: {len(out):,} subjects scored")
    return out, n_events
