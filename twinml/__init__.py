"""twinml: machine-learning digital twins of patients.

Subpackages: ``simulate`` (the patient simulator), ``data`` (MEDS I/O), ``cohort`` (tasks and
labels), ``features`` (tabular features), ``models`` (baselines), ``evaluation`` (metrics),
``tracking`` (MLflow). Heavy libraries are imported lazily by each subpackage.
"""

from ._version import __version__

__all__ = ["__version__"]
