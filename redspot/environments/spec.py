"""Environment specs: what a data scientist asks for, parsed and validated.

A spec is untrusted input from the REST API. ``parse_spec`` turns a JSON object into an
``EnvironmentSpec`` or raises ``SpecError`` naming the field and what is allowed; nothing
in a valid spec can reach a shell or pip's options:

- Python packages are PEP 508 requirements by name, without URLs, options or files
  (``numpy>=2``, ``torch[cuda]==2.13.0``, ``pandas; python_version>="3.11"``);
- Debian packages follow Debian's package-name grammar, optionally ``=version``;
- environment variables have POSIX names and plain values (no ``$``, backticks,
  backslashes or line breaks), and cannot override what Redspot or JupyterHub set.

The *identity* of a spec is a hash of what the build depends on (base and its digest,
packages, variables), normalised, so that the same environment is built once, whoever
asks, and named ``env-<hash>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
#: Characters a shell or a Dockerfile would treat specially, never allowed in a value.
UNSAFE = re.compile(r"[$`\\\n\r\x00]")
RESERVED_ENV_PREFIXES = ("JUPYTERHUB_", "REDSPOT_", "JPY_", "MLFLOW_TRACKING_", "RAY_")
RESERVED_ENV = {
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL",
}
LIMITS = {"python": 100, "debian": 100, "env": 50, "requirement": 200, "value": 4096,
          "description": 500}
FIELDS = {
    "name": "the environment's name: 1 to 63 of a-z, 0-9, '.', '_', '-'",
    "base": "the base image to build on",
    "python": "a list of Python requirements (PEP 508, by name)",
    "debian": "a list of Debian package names, optionally name=version",
    "env": "an object of environment variables",
    "description": "what the environment is for",
}


class SpecError(ValueError):
    """A spec is not valid: ``field`` says where, the message what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    base: str
    python: tuple[str, ...] = ()
    debian: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> EnvironmentSpec:
        """A spec from the catalog (written by ``to_dict`` after validation)."""
        return cls(
            name=data["name"], base=data["base"], python=tuple(data["python"]),
            debian=tuple(data["debian"]), env=tuple(sorted(data["env"].items())),
            description=data["description"],
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "base": self.base,
            "python": list(self.python),
            "debian": list(self.debian),
            "env": dict(self.env),
            "description": self.description,
        }

    def build_inputs(self, base_digest: str) -> dict:
        """Everything the build depends on, normalised (the name and description are not)."""
        return {
            "base": self.base,
            "base_digest": base_digest,
            "python": list(self.python),
            "debian": list(self.debian),
            "env": dict(self.env),
        }

    def tag(self, base_digest: str, owner: str | None = None) -> str:
        """``env-<16 hex>``: the same build inputs (and owner: a personal environment's
        build is its owner's alone) always give the same tag."""
        inputs = self.build_inputs(base_digest)
        if owner is not None:
            inputs["owner"] = owner
        canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
        return "env-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _string(value, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise SpecError(field, f"expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise SpecError(field, f"at most {limit} characters, got {len(value)}")
    return value


def _list(value, field: str, limit: int) -> list:
    if not isinstance(value, list):
        raise SpecError(field, f"expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise SpecError(field, f"at most {limit} entries, got {len(value)}")
    return value


def normalize_requirement(text: str, where: str) -> str:
    text = _string(text, where, LIMITS["requirement"]).strip()
    if not text or text.startswith("-") or UNSAFE.search(text) or re.search(r"[|&{}]", text):
        raise SpecError(where, f"{text!r} is not a package requirement; use a name with an "
                               "optional version, e.g. 'numpy>=2' or 'torch==2.13.0'")
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        reason = str(e).splitlines()[0]
        raise SpecError(where, f"{text!r} is not a valid requirement (PEP 508): {reason}") from None
    if req.url:
        raise SpecError(where, f"{text!r}: direct URLs are not allowed; name a package from "
                               "the index")
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{canonicalize_name(req.name)}{extras}{req.specifier}{marker}"


def parse_spec(data: object, bases: dict[str, str]) -> EnvironmentSpec:
    """Validate a spec from the API against the available ``bases`` (name -> description)."""
    if not isinstance(data, dict):
        raise SpecError("(body)", "expected a JSON object with " + ", ".join(FIELDS))
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise SpecError(unknown[0], f"unknown field; allowed: {', '.join(FIELDS)}")

    if "name" not in data:
        raise SpecError("name", "required: " + FIELDS["name"])
    name = _string(data["name"], "name", 63)
    if not NAME.match(name):
        raise SpecError("name", f"{name!r} is not allowed; {FIELDS['name']}")

    base = data.get("base", next(iter(bases)) if bases else "")
    _string(base, "base", 63)
    if base not in bases:
        raise SpecError("base", f"{base!r} is not a base image; allowed: {', '.join(bases)}")

    python = []
    for i, text in enumerate(_list(data.get("python", []), "python", LIMITS["python"])):
        python.append(normalize_requirement(text, f"python[{i}]"))
    names = [canonicalize_name(Requirement(r).name) for r in python]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError("python", f"listed more than once: {', '.join(duplicates)}")

    debian = []
    for i, text in enumerate(_list(data.get("debian", []), "debian", LIMITS["debian"])):
        text = _string(text, f"debian[{i}]", 100).strip()
        if not DEBIAN_PACKAGE.match(text):
            raise SpecError(f"debian[{i}]", f"{text!r} is not a Debian package name: "
                                            "lower-case letters, digits, '+', '-', '.', "
                                            "optionally '=version'")
        debian.append(text)

    env = data.get("env", {})
    if not isinstance(env, dict):
        raise SpecError("env", f"expected an object of NAME: value, got {type(env).__name__}")
    if len(env) > LIMITS["env"]:
        raise SpecError("env", f"at most {LIMITS['env']} variables, got {len(env)}")
    pairs = []
    for key, value in env.items():
        if not ENV_NAME.match(key):
            raise SpecError(f"env.{key}", "not a variable name: letters, digits and '_', "
                                          "not starting with a digit")
        if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES):
            raise SpecError(f"env.{key}", "set by Redspot; choose another name")
        value = _string(value, f"env.{key}", LIMITS["value"])
        if UNSAFE.search(value):
            raise SpecError(f"env.{key}", "values may not contain '$', '`', '\\' or line "
                                          "breaks")
        pairs.append((key, value))

    description = _string(data.get("description", ""), "description", LIMITS["description"])
    if re.search(r"[\x00-\x1f]", description):
        raise SpecError("description", "may not contain control characters or line breaks")

    return EnvironmentSpec(
        name=name,
        base=base,
        python=tuple(sorted(set(python))),
        debian=tuple(sorted(set(debian))),
        env=tuple(sorted(pairs)),
        description=description,
    )
