"""One place that produces every input error in twinml.

Each message names the table (or file), the column, the rule broken and an example of
the bad value, so a user can find the row without reading our code. Here too: the one strict base
of every YAML-bound config (:class:`StrictModel`), its annotated field types, the one YAML loader
(:func:`load_validated`), and the estimators' declared parameter rules (:func:`check_params`).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

__all__ = [
    "TwinmlInputError",
    "MEDSValidationError",
    "ConfigError",
    "input_error",
    "user_error_message",
    "check_positive_int",
    "PositiveInt",
    "NonNegativeInt",
    "StrictModel",
    "load_validated",
    "format_validation_error",
    "Rule",
    "check_params",
    "POSITIVE_INT",
    "NON_NEGATIVE_INT",
    "DICT_OR_NONE",
    "one_of",
    "number_in",
]


class TwinmlInputError(ValueError):
    """Bad input data or configuration (a ``ValueError`` subclass)."""


class MEDSValidationError(TwinmlInputError):
    """A MEDS file or table breaks the MEDS data contract."""


class ConfigError(TwinmlInputError):
    """A configuration file or value breaks a rule."""


def user_error_message(err: BaseException) -> str | None:
    """The one line to show a user for an error of theirs (bad input, a missing or existing path, an
    MLflow refusal such as an unknown model or alias), or None for a bug, whose traceback should show."""
    if isinstance(err, (TwinmlInputError, FileExistsError, FileNotFoundError)):
        return str(err)
    mlflow_errors = sys.modules.get("mlflow.exceptions")  # never import mlflow just to check
    if mlflow_errors is not None and isinstance(err, mlflow_errors.MlflowException):
        return f"MLflow: {err.message}"
    return None


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

    >>> check_positive_int(-30, name="horizons_days", owner="simulate")
    Traceback (most recent call last):
    ...
    twinml._validation.ConfigError: The 'horizons_days' parameter of simulate must be a positive int. Got -30 instead.
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


def _non_negative(v: int) -> int:
    if v < 0:
        raise ValueError(f"must be a non-negative int. Got {v} instead")
    return v


NonNegativeInt = Annotated[int, AfterValidator(_non_negative)]
"""An int config field that must be >= 0 ("must be a non-negative int. Got -3 instead")."""


class StrictModel(BaseModel):
    """The base of every YAML-bound config: unknown keys are errors, values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_validated(model: type[BaseModel], path_or_dict, *, what: str, source: str, empty_is_default=False):
    """A YAML file (or a dict) validated as ``model``; every error is a ConfigError naming file, key and rule.

    ``what`` names the thing in messages ("config", "audit policy"); ``source`` labels a dict.
    With ``empty_is_default`` an empty file means every default.
    """
    import yaml

    if isinstance(path_or_dict, dict):
        raw = path_or_dict
    else:
        source = str(path_or_dict)
        if not Path(path_or_dict).exists():
            raise ConfigError(f"{source}: {what} file not found.")
        try:
            raw = yaml.safe_load(Path(path_or_dict).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
        raw = {} if raw is None and empty_is_default else raw
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: a{'n' if what[0] in 'aeiou' else ''} {what} must be a mapping of keys; got {type(raw).__name__}"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source=source, model=model)) from None


def format_validation_error(err: ValidationError, *, source: str, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: ``file: key.path: rule; got value``, with 'did you mean' for typos."""
    lines = []
    for e in err.errors():
        loc = prefix + ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            known = _known_keys(model, e["loc"][:-1])
            guess = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            msg = "is not a known key" + (f"; did you mean {guess[0]!r}?" if guess else f"; known keys: {known}")
            lines.append(f"{source}: {loc} {msg}")
            continue
        got = e.get("input")
        if isinstance(got, BaseModel):  # a validated section: its keys as written
            got = got.model_dump(mode="json", exclude_defaults=True)
        lines.append(f"{source}: {loc.rstrip('.')}: {msg}; got {got!r}")
    return "\n".join(lines)


def _known_keys(model, loc):
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            break
        ann = field.annotation
        inner = getattr(ann, "__args__", ())
        candidates = [a for a in (ann, *inner) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            break
        model = candidates[-1]
    return sorted(model.model_fields)


@dataclass(frozen=True)
class Rule:
    """A rule an estimator parameter must meet: ``ok(value)``, and its words in the message
    "The 'x' parameter of Model must be <words>. Got <value> instead."."""

    words: str
    ok: Callable[[Any], bool]


def _is_int(v) -> bool:
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    import numbers

    return isinstance(v, numbers.Real) and not isinstance(v, bool)


POSITIVE_INT = Rule("a positive int", lambda v: _is_int(v) and v > 0)
NON_NEGATIVE_INT = Rule("a non-negative int", lambda v: _is_int(v) and v >= 0)
DICT_OR_NONE = Rule("a dict or None", lambda v: v is None or isinstance(v, dict))


def one_of(values, words: str | None = None) -> Rule:
    """The value must be one of ``values`` (compared with ==); ``words`` overrides "one of [...]"."""
    values = tuple(values)
    return Rule(words or f"one of {list(values)}", lambda v: any(v is x or v == x for x in values))


def number_in(lo, hi, *, lo_closed=True, hi_closed=True, words: str | None = None) -> Rule:
    """A number (int or float, not bool) within ``[lo, hi]`` (open ends with ``*_closed=False``)."""

    def ok(v):
        if not _is_number(v):
            return False
        above = v >= lo if lo_closed else v > lo
        below = v <= hi if hi_closed else v < hi
        return above and below

    shown = f"{'[' if lo_closed else '('}{lo:g}, {hi:g}{']' if hi_closed else ')'}"
    return Rule(words or f"a number in {shown}", ok)


def check_params(estimator, rules: Mapping[str, Rule], *, prefix: str = "") -> None:
    """Check the estimator's parameters against their declared rules; the first broken one is a
    ConfigError naming the parameter, the estimator, the rule and the value. ``prefix`` names nested
    settings as scikit-learn does (``encoder__``).

    >>> class Model:
    ...     max_epochs = 0
    >>> check_params(Model(), {"max_epochs": POSITIVE_INT})
    Traceback (most recent call last):
    ...
    twinml._validation.ConfigError: The 'max_epochs' parameter of Model must be a positive int. Got 0 instead.
    """
    for name, rule in rules.items():
        value = getattr(estimator, name)
        if not rule.ok(value):
            raise ConfigError(
                f"The {prefix + name!r} parameter of {type(estimator).__name__} must be {rule.words}. "
                f"Got {value!r} instead."
            )
