"""The governance audit: planted disparity caught, small cells never shown, explanations faithful, report renders."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from twinml.audit import load_policy, run_audit
from twinml.config import load_config
from twinml.data import read_meds, read_subject_splits
from twinml.evaluation import SUPPRESSED, subgroup_metrics
from twinml.pipeline import train

from .conftest import NEEDS_CHROMIUM, chromium

TASK = {
    "name": "audit-task",
    "outcomes": {"t2d": {"codes": ["SNOMED/44054006"]}, "ckd": {"codes": ["SNOMED/433144002"]}},
    "horizons_days": [365, 730],
    "prediction_times": {"strategy": "yearly", "start": "2012-01-01", "every_days": 365},
    "min_history_days": 365,
    "min_age_years": 18,
    # a large held-out share, so each race group has enough rows to be judged
    "split": {"strategy": "random", "fractions": [0.5, 0.1, 0.4]},
}
# The policy an auditor of the under-diagnosis question would write: race groups, both gates on
# subgroup calibration, 730-day labels (more events per group).
POLICY = {
    "labels": ["t2d_730d", "ckd_730d"],
    "attributes": {"race": "RACE//"},
    "age_bands": [],
    "intersections": [],
    "n_bootstrap": 20,
    "explain": {"n_rows": 100},
    "mitigation": {"attribute": "race"},
    "membership": {"max_subjects": 1000, "reference_models": 2},
    "gates": {
        "min_auroc_lower_bound": 0.6,
        "max_ece": 0.02,
        "max_subgroup_auroc_gap": 0.1,
        "min_observed_expected_ratio": 0.7,
        "min_true_risk_ratio": 0.6,
        "min_faithfulness_ratio": None,
    },
}


def _train(root: Path, name: str, underdiagnosis_rate: float):
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(
        {
            "name": name,
            "seed": 0,
            "data": {
                "source": "simulator",
                "path": str(root / name),
                "simulator": {
                    "n_subjects": 10_000,
                    "seed": 1,
                    "bias_group": "RACE//Black",
                    "underdiagnosis_rate": underdiagnosis_rate,
                },
            },
            "task": TASK,
            "model": {"kind": "logistic", "params": {"C": 0.05}},
            "evaluation": {"n_bootstrap": 0},
            "tracking": {"uri": uri, "experiment": "audit-tests", "register_as": name},
        }
    )
    train(cfg)
    return uri, root / name


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    uri, biased = _train(root, "biased", 0.8)
    _, fair = _train(root, "fair", 0.0)
    return {"uri": uri, "biased": biased, "fair": fair, "root": root}


@pytest.fixture(scope="module")
def fair_audit(registry):
    out = registry["root"] / "fair-audit"
    res = run_audit(
        "models:/fair/1",
        registry["fair"],
        policy=load_policy(POLICY),
        out=out,
        tracking_uri=registry["uri"],
        progress=lambda m: None,
    )
    return res


def _fairness_gates(report):
    return [g for g in report["gates"] if g["gate"].startswith("subgroup")]


@pytest.mark.slow  # 18 s: make test stays under 5 minutes; make test-slow and CI run it
def test_planted_underdiagnosis_fails_the_fairness_gate(registry, tmp_path):
    """CLI, exit code 1, the failing group named, and the registry version tagged as failed."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))  # JSON is YAML
    out = tmp_path / "biased-audit"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "twinml.cli",
            "audit",
            "--model",
            "models:/biased/1",
            "--events",
            str(registry["biased"]),
            "--policy",
            str(policy),
            "--out",
            str(out),
            "--tracking-uri",
            registry["uri"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "audit gates: FAILED" in proc.stdout
    assert f"report: {out / 'report.html'}" in proc.stdout.replace("\n", "")
    report = json.loads((out / "audit.json").read_text())
    failed = [g for g in _fairness_gates(report) if g["passed"] is False]
    assert failed and all(g["groups"] == ["race=Black"] for g in failed), failed
    assert {g["gate"] for g in failed} >= {"subgroup calibration against true risk"}
    mlflow.set_tracking_uri(registry["uri"])
    tags = mlflow.MlflowClient().get_model_version("biased", "1").tags
    assert tags["twinml.audit.passed"] == "false"


def test_without_the_knob_the_fairness_gates_pass(fair_audit, registry):
    gates = _fairness_gates(fair_audit.report)
    assert gates and all(g["passed"] is not False for g in gates), gates
    assert fair_audit.passed
    mlflow.set_tracking_uri(registry["uri"])
    assert mlflow.MlflowClient().get_model_version("fair", "1").tags["twinml.audit.passed"] == "true"


def test_report_covers_tripod_items_and_lineage(fair_audit):
    html = (fair_audit.out_dir / "report.html").read_text()
    for heading in (
        "Data source and dates",
        "Eligibility and cohort attrition",
        "Outcome and predictor definitions",
        "Sample size and events per outcome",
        "Missing data",
        "Performance",
        "Calibration",
        "Fairness across groups",
        "Explanations",
        "Intended use and limitations",
        "Lineage",
    ):
        assert heading in html
    assert "http://" not in html and "https://" not in html  # opens offline: nothing fetched
    assert html.count("data:image/png;base64,") >= 3
    lineage = fair_audit.report["lineage"]
    for key in ("data_fingerprint", "config_hash", "code_version", "seed", "run_id", "model_version", "packages"):
        assert lineage[key] not in (None, ""), key
    card = (fair_audit.out_dir / "model_card.md").read_text()
    assert "# Model card: fair" in card and "Audit: **passed**" in card
    # privacy: training subjects against held-out ones, by their loss; the regularised model does not leak
    # privacy: both attacks, on all labels pooled and on each; the regularised model does not leak
    membership = fair_audit.report["membership"]
    assert membership["members"] == membership["non_members"] == membership["population"] == 1000
    assert membership["reference_models"] == 2 and membership["reference_subjects"] > 1000
    attacks = {(a["label"], a["attack"].split(" ")[0]) for a in membership["attacks"]}
    assert attacks == {(c, k) for c in ("all", "t2d_730d", "ckd_730d") for k in ("loss", "reference")}
    assert all(a["auc_hi"] <= 0.6 for a in membership["attacks"])
    gates = [g for g in fair_audit.report["gates"] if g["gate"].startswith("membership inference")]
    assert len(gates) == 2 and all(g["passed"] for g in gates)
    assert "Membership inference (privacy)" in html and "reference-model attack (RMIA-style" in html
    assert "## Privacy" in card and "reference models (RMIA-style) AUROC" in card


def test_mitigation_is_a_tradeoff_table_never_applied(fair_audit, registry):
    m = fair_audit.report["mitigation"]
    assert m["attribute"] == "race" and m["fit_split"] == "tuning"
    for lab in m["labels"]:
        policies = [r["policy"] for r in lab["table"]]
        assert policies[0].startswith("single threshold") and len(policies) == 3
        overall = next(
            r
            for r in next(x for x in fair_audit.report["fairness"]["labels"] if x["label"] == lab["label"])["by_group"]
            if r["attribute"] == "overall"
        )
        assert lab["table"][0]["tpr"] == pytest.approx(overall["tpr"])  # the row "in use" is the audited model as is
        eo = lab["table"][2]
        assert eo["policy"] == "ThresholdOptimizer(equalized_odds)" and 0 <= eo["tpr"] <= 1
    # the registered model is untouched: its predictions are those of the model the run logged
    mlflow.set_tracking_uri(registry["uri"])
    assert mlflow.MlflowClient().get_model_version("fair", "1").tags.get("twinml.promotion.champion") is None


def test_calibration_shows_before_and_after(fair_audit):
    for entry in fair_audit.report["calibration"]:
        assert set(entry) >= {"before", "after", "reliability", "reliability_before"}
        shown = [row for row in entry["reliability"] if row["n"] != SUPPRESSED]
        assert shown  # a table of suppressed bins only would check nothing
        for row in shown:
            assert row["observed_lo"] <= row["observed"] <= row["observed_hi"]


class _Rows(HTMLParser):
    """Table rows of an HTML file as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _with_tiny_group(src: Path, dst: Path, n: int = 5) -> None:
    """Copy a MEDS dataset, moving ``n`` held-out subjects into a new race group ``Tiny``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(src, dst)
    chosen = _held_out_subjects(src, read_meds(src))[:n]
    for f in sorted((dst / "data").rglob("*.parquet")):
        table = pq.read_table(f)
        df = table.to_pandas()
        hit = df["code"].astype(str).str.startswith("RACE//") & df["subject_id"].isin(chosen)
        df["code"] = df["code"].astype(str).where(~hit, "RACE//Tiny")
        pq.write_table(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), f)


def _held_out_subjects(root, events):
    from twinml.cohort import TaskDefinition, build_labels

    labels = build_labels(
        events, task=TaskDefinition.model_validate(TASK), subject_splits=read_subject_splits(root)
    ).labels
    known = labels["t2d_730d"].notna() & labels["ckd_730d"].notna()
    return np.sort(labels.loc[(labels["split"] == "held_out") & known, "subject_id"].unique())


@pytest.mark.slow  # 16 s: make test stays under 5 minutes; make test-slow and CI run it
def test_a_group_of_five_never_appears_as_a_number(registry, tmp_path):
    meds = tmp_path / "tiny"
    _with_tiny_group(registry["fair"], meds)
    out = tmp_path / "tiny-audit"
    policy = dict(POLICY, age_bands=[18, 45, 65], intersections=[["race", "age_band"]])
    res = run_audit(
        "models:/fair/1",
        meds,
        policy=load_policy(policy),
        out=out,
        tracking_uri=registry["uri"],
        progress=lambda m: None,
    )
    # JSON: every row about the group holds names, the flag, and "suppressed" -- nothing else
    report = json.loads((out / "audit.json").read_text())
    rows = [r for lab in report["fairness"]["labels"] for r in lab["by_group"] if "Tiny" in r["group"]]
    assert sorted(
        r["label"]
        for r in [
            dict(x, label=lab["label"])
            for lab in report["fairness"]["labels"]
            for x in lab["by_group"]
            if x["group"] == "Tiny"
        ]
    ) == ["ckd_730d", "t2d_730d"]
    for r in rows:
        assert r["suppressed"] is True
        assert {k: v for k, v in r.items() if k not in ("attribute", "group", "suppressed")} == {
            k: SUPPRESSED for k in r if k not in ("attribute", "group", "suppressed")
        }
    assert not any("Tiny" in json.dumps(d) for lab in report["fairness"]["labels"] for d in lab["disparities"])
    for g in report["gates"]:
        assert not any("Tiny" in x for x in g["groups"])
    # HTML: each table row naming the group has no digit outside its name
    parser = _Rows()
    parser.feed((out / "report.html").read_text())
    tiny_rows = [r for r in parser.rows if any("Tiny" in c for c in r)]
    assert tiny_rows
    for r in tiny_rows:
        rest = [c for c in r if "Tiny" not in c and c not in ("race", "race × age_band")]
        assert all(c == SUPPRESSED for c in rest), r
    # the logged artifacts are exactly these files; no group-level metric is logged
    mlflow.set_tracking_uri(registry["uri"])
    run = mlflow.get_run(res.mlflow_run_id)
    assert not any("Tiny" in k for k in run.data.metrics)
    logged = Path(
        mlflow.artifacts.download_artifacts(
            run_id=res.mlflow_run_id, artifact_path="audit", dst_path=str(tmp_path / "dl")
        )
    )
    for name in ("report.html", "audit.json", "model_card.md"):
        assert (logged / name).read_bytes() == (out / name).read_bytes()
    assert "Tiny" not in (out / "model_card.md").read_text()


def test_secondary_suppression_hides_the_next_smallest_group():
    rng = np.random.default_rng(0)
    n = 600
    group = np.where(np.arange(n) < 5, "tiny", np.where(np.arange(n) < 60, "small", "big"))
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.1, n), 0.01, 0.99)
    res = subgroup_metrics(
        y, p, pd.DataFrame({"g": group}), subject_id=np.arange(n), label="x", threshold=0.3, min_cell=11, n_boot=0
    )
    shown = res.by_group.set_index("group")
    assert shown.loc["tiny", "n_rows"] == SUPPRESSED
    assert shown.loc["small", "n_rows"] == SUPPRESSED  # otherwise all - big - small reveals tiny
    assert shown.loc["big", "n_rows"] == n - 60


def test_policy_errors_name_the_key():
    from twinml._validation import ConfigError

    with pytest.raises(ConfigError, match=r"operating_top_fraction.*must be between 0 and 1"):
        load_policy({"operating_top_fraction": 1.5})
    with pytest.raises(ConfigError, match="gates.max_ecee"):
        load_policy({"gates": {"max_ecee": 0.1}})


@pytest.mark.browser
@pytest.mark.skipif(chromium() is None, reason=NEEDS_CHROMIUM)
def test_report_renders_in_headless_chromium(fair_audit, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            (fair_audit.out_dir / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    img = imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    assert img[..., :3].std() > 0.05  # not a blank page: text, tables and figures drawn
    # at 1280 px every table and figure fits the page: none runs past the body or needs a scroll bar
    layout = _layout_at_1280(fair_audit.out_dir / "report.html", tmp_path)
    assert layout["boxes"], "no tables or figures measured"
    assert {b["kind"] for b in layout["boxes"]} == {"table", "img"}
    wide = [b for b in layout["boxes"] if b["right"] > layout["body_right"] + 0.5 or b["scrolls"]]
    assert wide == [], wide
    assert any(b["alt"].startswith("subgroup forest plot") for b in layout["boxes"])


_LAYOUT_PROBE = """<script>window.addEventListener('load', () => {
  const body = document.body.getBoundingClientRect(), boxes = [];
  document.querySelectorAll('table, img').forEach(el => {
    const r = el.getBoundingClientRect(), p = el.parentElement;
    boxes.push({kind: el.tagName.toLowerCase(), right: r.right, alt: el.alt || '',
                scrolls: p.scrollWidth > p.clientWidth + 1});
  });
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify({body_right: body.right, boxes: boxes});
  document.body.appendChild(out);
});</script>"""


def _layout_at_1280(report, tmp_path):
    """Where Chromium at 1280 px puts each table and image of ``report`` (a copy with a probe script)."""
    import html as html_lib
    import re

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400", "--dump-dom"]
        + [probe.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


def test_the_subgroup_forest_plot_draws_shown_groups_only():
    from twinml._plotting import close
    from twinml.audit import SubgroupForestDisplay

    def group(attribute, name, auroc, oe, suppressed=False):
        if suppressed:
            return {"attribute": attribute, "group": name, "suppressed": True, "auroc": SUPPRESSED}
        return dict(
            attribute=attribute, group=name, suppressed=False, auroc=auroc, auroc_lo=auroc - 0.05,
            auroc_hi=auroc + 0.05, observed_expected=oe, observed_expected_lo=oe * 0.8, observed_expected_hi=oe * 1.2,
        )  # fmt: skip

    entry = {
        "label": "t2d_365d",
        "by_group": [
            dict(group("overall", "all", 0.74, 1.05), auroc_lo=None, auroc_hi=None),
            group("race", "A", 0.70, 1.1),
            group("race", "Tiny", 0, 0, suppressed=True),
            group("sex", "F", 0.78, 0.9),
        ],
    }
    fig = SubgroupForestDisplay(entry, title="t").plot().figure_
    auroc_ax, oe_ax = fig.axes
    names = [t.get_text().strip() for t in auroc_ax.get_yticklabels()]
    assert names == ["race", "A", "Tiny (suppressed)", "sex", "F"]  # the suppressed group is named
    for ax, values in ((auroc_ax, [0.70, 0.78]), (oe_ax, [1.1, 0.9])):
        marks = [c.lines[0].get_xdata()[0] for c in ax.containers]  # one errorbar per shown group
        assert marks == pytest.approx(values)
    assert [ln.get_xdata()[0] for ln in auroc_ax.lines if ln.get_linestyle() == "--"] == [0.74]  # population
    assert [ln.get_xdata()[0] for ln in oe_ax.lines if ln.get_linestyle() == "--"] == [1.05]
    close(fig)


T2D_DRIVERS = {
    "LOINC/4548-4",
    "LOINC/2345-7",
    "LOINC/39156-5",
}  # HbA1c, glucose, BMI: the simulator's glycaemic signals


@pytest.mark.slow  # 15 s: make test stays under 5 minutes; make test-slow and CI run it
def test_sequence_explanations_are_faithful_and_find_the_true_drivers(registry):
    from twinml.cohort import TaskDefinition, build_labels
    from twinml.evaluation import code_importance, explain_model, faithfulness, patient_drivers, window_importance
    from twinml.models import SequenceRiskModel

    root = registry["fair"]
    events = read_meds(root)
    labels = build_labels(
        events, task=TaskDefinition.model_validate(TASK), subject_splits=read_subject_splits(root)
    ).labels
    part = {s: labels[labels["split"] == s].reset_index(drop=True) for s in ("train", "tuning", "held_out")}
    model = SequenceRiskModel(
        d_model=32, max_len=128, max_epochs=3, n_threads=2, random_state=0, trajectory_codes=None
    ).fit(events, part["train"], tuning_labels=part["tuning"])
    index = part["held_out"].sample(200, random_state=0)[["subject_id", "prediction_time"]].reset_index(drop=True)
    attr = explain_model(model, events, index, label="t2d_730d")
    top = code_importance(attr, top=5)
    assert set(top["code"]) & T2D_DRIVERS, top
    check = faithfulness(model, events, index, attr, k=5)
    assert check["ratio"] >= 1.5 and check["share_rows_top_k_larger"] > 0.6, check
    shares = window_importance(attr)["share_of_abs_attribution"]
    assert shares.sum() == pytest.approx(1.0)
    drivers = patient_drivers(attr, top=3)
    assert drivers.groupby("row").size().max() <= 3 and set(drivers["direction"]) <= {"raises", "lowers"}


def test_subgroup_reference_largest_group_is_not_dragged_by_the_deviant_group():
    from twinml.audit._gates import _true_risk_gate

    def group(name, n, ratio):
        return {"attribute": "race", "group": name, "n_subjects": n, "true_risk_ratio": ratio, "suppressed": False}

    overall = {"true_risk_ratio": 0.8}  # pulled down by the under-predicted group B
    groups = [group("W", 1000, 1.0), group("B", 300, 0.3), group("A", 100, 1.3)]
    population = _true_risk_gate("x", overall, groups, 0.7, "population")
    largest = _true_risk_gate("x", overall, groups, 0.7, "largest_group")
    assert population["groups"] == ["race=B", "race=A"]  # A only looks high next to a dragged average
    assert largest["groups"] == ["race=B"] and "largest group" in largest["rule"]
    assert largest["value"] == pytest.approx(0.3)


def test_report_is_strict_json_with_nan_as_null(fair_audit):
    from twinml.audit._audit import _clean_tree
    from twinml.evaluation import calibration_summary

    one_class = calibration_summary([0, 0, 0, 0], [0.1, 0.2, 0.1, 0.3])  # slope and intercept undefined: NaN
    assert _clean_tree({"a": [one_class, np.float32(0.5), {"b": np.int64(3)}]})["a"][0]["calibration_slope"] is None
    assert _clean_tree({"a": [float("nan"), np.float32(0.5), {"b": np.int64(3)}]}) == {"a": [None, 0.5, {"b": 3}]}
    json.dumps(fair_audit.report, allow_nan=False)  # the report as written: strict JSON
