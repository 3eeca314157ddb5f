"""Does the audit catch a planted under-diagnosis, and stay quiet without it, across simulated cohorts?

    python benchmarks/audit_bias.py [--seeds 1,2,3,4,5,6] [--rate 0.8] [--reference population|largest_group]

For each simulator seed: two cohorts of 10,000 patients, one where 80% of the T2D and CKD
diagnoses of Black patients are never recorded and one without; a regularised logistic model
trained on each (the setting of tests/test_audit.py); the audit with the tests' policy. Prints
which fairness gates fail and for which groups.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_audit import POLICY, TASK  # noqa: E402  (the same task and policy as the test)
from twinml.audit import load_policy, run_audit  # noqa: E402
from twinml.config import load_config  # noqa: E402
from twinml.pipeline import train  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="1,2,3,4,5,6")
    p.add_argument("--rate", type=float, default=0.8)
    p.add_argument(
        "--reference",
        choices=("population", "largest_group"),
        default=None,
        help="gates.subgroup_reference (default: the tests' policy)",
    )
    p.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / ".cache" / "audit-bias")
    a = p.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{a.workdir / 'mlflow.db'}"
    policy = (
        POLICY if a.reference is None else {**POLICY, "gates": {**POLICY["gates"], "subgroup_reference": a.reference}}
    )
    for seed in (int(s) for s in a.seeds.split(",")):
        for rate in (a.rate, 0.0):
            name = f"seed{seed}-{'bias' if rate else 'nobias'}"
            cfg = load_config(
                {
                    "name": name,
                    "seed": 0,
                    "data": {
                        "source": "simulator",
                        "path": str(a.workdir / name),
                        "simulator": {
                            "n_subjects": 10_000,
                            "seed": seed,
                            "bias_group": "RACE//Black",
                            "underdiagnosis_rate": rate,
                        },
                    },
                    "task": TASK,
                    "model": {"kind": "logistic", "params": {"C": 0.05}},
                    "evaluation": {"n_bootstrap": 0},
                    "tracking": {"uri": uri, "experiment": "audit-bias", "register_as": None},
                }
            )
            model_uri = train(cfg).model_uri
            res = run_audit(
                model_uri,
                a.workdir / name,
                policy=load_policy(policy),
                out=a.workdir / f"{name}-audit",
                overwrite=True,
                tracking_uri=uri,
                progress=lambda m: None,
            )
            failed = [
                f"{g['gate'].removeprefix('subgroup ')} {g['label']}: {', '.join(g['groups'])}"
                for g in res.report["gates"]
                if g["gate"].startswith("subgroup") and g["passed"] is False
            ]
            print(
                f"seed {seed} under-diagnosis {rate:.1f}: fairness gates {'FAIL' if failed else 'pass'}"
                + (f" ({'; '.join(failed)})" if failed else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
