"""What the registry accepts as names, tags and metrics (pure; the service and the
notebook's client both check with these, so a bad value is refused before any upload)."""

from __future__ import annotations

import math
import numbers

#: MLflow keeps registered model names in a 256-character column (SQLite does not
#: enforce it, so the service does).
MAX_NAME = 256
#: MLflow's limits for registry tags (``mlflow.utils.validation``).
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 100_000
MAX_DESCRIPTION = 5000
#: Characters MLflow's stores refuse in a model's name.
_BAD_NAME_CHARACTERS = "/:%"


class InvalidInput(ValueError):
    """A value the registry would refuse; the message says what is allowed."""


def name_problem(name) -> str | None:
    """Why ``name`` cannot name a registered model, or None."""
    if not isinstance(name, str) or not name.strip():
        return "a model needs a name"
    if name != name.strip():
        return f"the name {name!r} starts or ends with white space"
    bad = sorted({c for c in name if c in _BAD_NAME_CHARACTERS or not c.isprintable()})
    if bad:
        return (f"the name {name!r} contains {', '.join(repr(c) for c in bad)}: names may "
                f"not contain '/', ':', '%' or control characters")
    if len(name) > MAX_NAME:
        return f"the name is {len(name)} characters long; at most {MAX_NAME} are allowed"
    return None


def check_name(name) -> str:
    problem = name_problem(name)
    if problem:
        raise InvalidInput(problem)
    return name


def check_tags(tags) -> dict[str, str]:
    """Tags as MLflow stores them: string keys and values within its limits."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise InvalidInput(f"tags: expected a dict of name to value, got {type(tags).__name__}")
    checked = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key.strip():
            raise InvalidInput(f"tag names must be non-empty strings, got {key!r}")
        if len(key) > MAX_TAG_KEY:
            raise InvalidInput(f"the tag name {key[:40]!r}… is {len(key)} characters long; "
                               f"at most {MAX_TAG_KEY} are allowed")
        value = "" if value is None else str(value)
        if len(value) > MAX_TAG_VALUE:
            raise InvalidInput(f"the tag {key!r} is {len(value)} characters long; at most "
                               f"{MAX_TAG_VALUE} are allowed")
        checked[key] = value
    return checked


def check_metrics(metrics) -> dict[str, float]:
    """Metrics: names to finite numbers (a numpy or torch scalar is fine)."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise InvalidInput(f"metrics: expected a dict of name to number, got "
                           f"{type(metrics).__name__}")
    checked = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_TAG_KEY:
            raise InvalidInput(f"metric names must be strings of 1 to {MAX_TAG_KEY} "
                               f"characters, got {key!r}")
        number = as_number(value)
        if number is None:
            raise InvalidInput(f"the metric {key!r} is {type(value).__name__} {value!r}: "
                               "a metric must be a finite number")
        checked[key] = number
    return checked


def as_number(value) -> float | None:
    """``value`` as a finite float when it is a real number or a one-element array."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, numbers.Real):
        item = getattr(value, "item", None)  # numpy and torch scalars, one-element arrays
        if item is None:
            return None
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_description(description) -> str:
    description = "" if description is None else description
    if not isinstance(description, str):
        raise InvalidInput("description: expected text")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"the description is {len(description)} characters long; at most "
                           f"{MAX_DESCRIPTION} are allowed")
    return description
