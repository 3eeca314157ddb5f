"""One place that produces every input error in twinml.

Each message names the table (or file), the column, the rule broken and an example of
the bad value, so a user can find the row without reading our code.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

__all__ = [
    "TwinmlInputError",
    "MEDSValidationError",
    "ConfigError",
    "input_error",
    "check_positive_int",
    "PositiveInt",
]


class TwinmlInputError(ValueError):
    """Bad input data or configuration (a ``ValueError`` subclass)."""


class MEDSValidationError(TwinmlInputError):
    """A MEDS file or table breaks the MEDS data contract."""


class ConfigError(TwinmlInputError):
    """A configuration file or value breaks a rule."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def input_error(
    *,
    table: str,
    column: str | None,
    rule: str,
    example: Any = None,
    cls: type[TwinmlInputError] = TwinmlInputError,
    hint: str | None = None,
) -> TwinmlInputError:
    """Build an error naming table, column, rule and an example value.

    >>> print(input_error(table="data/0.parquet", column="code", rule="must not be null",
    ...                   example="subject_id=7", cls=MEDSValidationError))
    data/0.parquet: column 'code' must not be null (example: subject_id=7)
    """
    where = f"{table}: column {column!r}" if column else f"{table}:"
    msg = f"{where} {rule}"
    if example is not None:
        msg += f" (example: {example if isinstance(example, str) else _show(example)})"
    if hint:
        msg += f". {hint}"
    return cls(msg)


def check_positive_int(value: Any, *, name: str, owner: str) -> int:
    """Check a parameter is a positive int, sklearn style.

    >>> check_positive_int(-30, name="horizon_days", owner="TaskConfig")
    Traceback (most recent call last):
    ...
    twinml._validation.ConfigError: The 'horizon_days' parameter of TaskConfig must be a positive int. Got -30 instead.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"The {name!r} parameter of {owner} must be a positive int. Got {value!r} instead.")
    return value


def _positive(v: int) -> int:
    if v <= 0:
        raise ValueError(f"must be a positive int. Got {v} instead")
    return v


PositiveInt = Annotated[int, AfterValidator(_positive)]
"""An int config field that must be > 0 (the error reads "must be a positive int. Got -3 instead")."""
