"""Load and validate the operator's ``redspot.yaml``.

``load_settings(path)`` returns the file's settings as a plain dict, checked against
``schema.yaml`` and against itself (profiles that groups name must exist...). Every
problem is reported at once, each naming the key and what is allowed::

    redspot.yaml is not valid:
      - hub.port: 'eighty' is not an integer
      - auth: unknown key 'typo'; allowed keys: admin_users, allowed_users, oauth, signup, type
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from ..spawner.profiles import ProfileError, ProfileRules, build_catalog, parse_size

#: Services this release can run. Others in the schema are reserved for later releases.
AVAILABLE_SERVICES: frozenset[str] = frozenset({"environments", "models", "warehouse",
                                                "sharing"})


class ConfigError(Exception):
    """The configuration is not valid. ``problems`` lists what is wrong, one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not valid:\n{lines}")


@cache
def schema() -> dict:
    text = resources.files("redspot.config").joinpath("schema.yaml").read_text()
    return yaml.safe_load(text)


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _format_error(error: jsonschema.ValidationError) -> str:
    where = _path(error)
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        if allowed:
            return (
                f"{where}: unknown key{'s' if len(extra) > 1 else ''} "
                f"{', '.join(repr(k) for k in extra)}; allowed keys: {', '.join(allowed)}"
            )
        return f"{where}: {error.message}"
    if kind == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{where}: {error.instance!r} is not allowed; allowed: {allowed}"
    if kind == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        return f"{where}: expected {names}, got {error.instance!r}"
    if kind == "not" and where.endswith("warehouse.connections"):
        return (f"{where}: {error.instance!r} is a reserved name (local: the notebook's own "
                "data frames; demo: the demo connection, see warehouse.demo)")
    if kind == "propertyNames":
        return f"{where}: name {error.instance!r} is not allowed ({error.message})"
    if kind == "oneOf" and where.endswith(("memory", "build_max_size")):
        return f"{where}: {error.instance!r} is not a size; use bytes or e.g. '16GiB', '500M'"
    if kind == "pattern":
        return f"{where}: {error.instance!r} does not match {error.validator_value!r}"
    return f"{where}: {error.message}"


def validate_settings(settings: object, source: str = "redspot.yaml") -> dict:
    """Validate settings already parsed from YAML; return them, or raise ConfigError."""
    if settings is None:
        settings = {}
    validator = jsonschema.Draft7Validator(schema())
    errors = sorted(validator.iter_errors(settings), key=lambda e: list(e.absolute_path))
    problems = [_format_error(e) for e in errors]
    if not problems:
        problems = _check_consistency(settings)
    if problems:
        raise ConfigError(source, problems)
    return settings


def enabled_services(settings: dict) -> list[str]:
    """The services ``services.<name>.enabled`` turns on, in the file's order."""
    return [name for name, service in settings.get("services", {}).items()
            if service.get("enabled")]


def profile_rules(settings: dict, catalog: dict) -> ProfileRules:
    """The profile rules the settings describe, with the built-in defaults filled in.

    Unless set: the default profile is ``m5.xlarge`` when offered (else the first offered
    one), and every user may use the default profile.
    """
    section = settings.get("profiles", {})
    offered = section.get("offered")
    offered_names = list(offered) if offered is not None else list(catalog)
    fallback = "m5.xlarge" if "m5.xlarge" in offered_names else next(iter(offered_names), None)
    default = section.get("default", fallback)
    everyone = section.get("everyone", [default] if default else [])
    return ProfileRules(
        offered=tuple(offered) if offered is not None else None,
        everyone=tuple(everyone),
        groups={
            name: tuple(group.get("profiles", []))
            for name, group in settings.get("groups", {}).items()
        },
        default=default,
        admins_use_all=section.get("admins_use_all", True),
    )


def _check_consistency(settings: dict) -> list[str]:
    problems = []
    try:
        catalog = build_catalog(settings.get("profiles", {}).get("catalog"))
    except ProfileError as e:
        problems.append(f"profiles.catalog: {e}")
    else:
        try:
            profile_rules(settings, catalog).check(catalog)
        except ProfileError as e:
            problems.append(str(e) if str(e).startswith("groups.") else f"profiles.{e}")
        from ..spawner.caps import check_cap_config

        try:
            check_cap_config({name: group["caps"] for name, group in
                              settings.get("groups", {}).items() if group.get("caps")},
                             catalog)
        except ProfileError as e:
            problems.append(str(e))
    problems.extend(_check_kubernetes(settings.get("kubernetes", {})))
    auth = settings.get("auth", {})
    if auth.get("type") == "oauth" and "oauth" not in auth:
        problems.append("auth.oauth: required when auth.type is oauth (provider and config)")
    if auth.get("type") == "oauth" and "oauth" in auth:
        problems.extend(_check_oauth(auth["oauth"]))
    if "signup" in auth and auth.get("type", "password") != "password":
        problems.append("auth.signup: only applies to auth.type password")
    problems.extend(_check_names(settings))
    if settings.get("spawner", {}).get("account_prefix") == "" and auth.get("type") != "pam":
        problems.append(
            "spawner.account_prefix: an empty prefix runs servers as the machine's own "
            "accounts of the same names, which only PAM vouches for; set auth.type: pam, or "
            "keep a prefix (default 'redspot-')")
    from ..warehouse.connections import check_settings

    problems.extend(check_settings(settings.get("warehouse", {}).get("connections", {})))
    environments = settings.get("services", {}).get("environments", {})
    if environments.get("builder") == "buildah" and not (
        environments.get("registry") and environments.get("bases")
    ):
        problems.append("services.environments: the buildah builder needs registry and bases")
    if environments.get("builder") == "kubernetes":
        if not (environments.get("repository") and environments.get("bases")):
            problems.append("services.environments: the kubernetes builder needs repository "
                            "and bases")
        if settings.get("spawner", {}).get("kind") != "kubernetes":
            problems.append("services.environments.builder: kubernetes builds run in the "
                            "cluster of spawner.kind: kubernetes")
    for name, service in settings.get("services", {}).items():
        if service.get("enabled") and name not in AVAILABLE_SERVICES:
            problems.append(
                f"services.{name}.enabled: the {name} service is not part of this release yet; "
                f"available: {', '.join(sorted(AVAILABLE_SERVICES)) or 'none'}"
            )
    return problems


def _check_names(settings: dict) -> list[str]:
    """Hub user names the settings name must be allowed (not ``team``, ``root``, or a
    system account of this machine)."""
    from ..privileged.accounts import name_problem

    named = [(f"groups.{g}.users", n) for g, group in settings.get("groups", {}).items()
             for n in group.get("users", [])]
    auth = settings.get("auth", {})
    named += [(f"auth.{key}", n) for key in ("admin_users", "allowed_users")
              for n in auth.get(key, [])]
    password = auth.get("type", "password") == "password"
    problems = []
    for where, name in named:
        problem = name_problem(name)
        if not problem and password:
            # Redspot's own accounts (password sign-in) are made with these names
            from ..hub.userstore import UserStoreError, validate_username

            try:
                validate_username(name)
            except UserStoreError as e:
                problem = str(e)
        elif not problem and name != name.lower():
            problem = (f"{name!r} has upper-case letters: the hub lower-cases names at "
                       f"sign-in, so it would never match; write {name.lower()!r}")
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def _check_kubernetes(kube: dict) -> list[str]:
    from ..spawner.storage import Dataset, KubeStorage

    storage = kube.get("storage", {})
    try:
        KubeStorage(
            **{k: v for k, v in storage.items() if k != "datasets"},
            datasets=tuple(Dataset(**d) for d in storage.get("datasets", ())),
        )
    except ValueError as e:
        return [f"kubernetes.storage: {e}"]
    if "daemonset_memory" in kube.get("node_overhead", {}):
        try:
            parse_size(kube["node_overhead"]["daemonset_memory"])
        except ProfileError as e:
            return [f"kubernetes.node_overhead.daemonset_memory: {e}"]
    return []


def _check_oauth(oauth: dict) -> list[str]:
    from .layers import OAUTH_PROVIDERS

    module, name = OAUTH_PROVIDERS[oauth["provider"]].rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError:
        return ["auth.oauth: the oauth extra is not installed: pip install 'redspot[oauth]'"]
    known = set(cls.class_trait_names(config=True))
    unknown = sorted(set(oauth.get("config", {})) - known)
    if unknown:
        return [
            f"auth.oauth.config: {name} has no setting {', '.join(map(repr, unknown))}; "
            f"see `jupyterhub --help-all` or the oauthenticator docs for {name}'s settings"
        ]
    return []


def load_settings(path: str | Path | None) -> dict:
    """Read, parse and validate a ``redspot.yaml``. A missing ``path`` (None) means defaults."""
    if path is None:
        return validate_settings({})
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(source, ["file not found"]) from None
    except OSError as e:
        raise ConfigError(source, [f"cannot be read: {e.strerror}"]) from None
    try:
        settings = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from None
    if settings is not None and not isinstance(settings, dict):
        kind = type(settings).__name__
        raise ConfigError(source, [f"expected a mapping of settings, got {kind}"])
    return validate_settings(settings, source)


def config_warnings(settings: dict) -> list[str]:
    """What still works in ``settings`` but should change (deprecated keys), as lines."""
    warnings = []
    if "idle_timeout" in settings.get("ray", {}):
        moved = "ignored: culling.ray_idle_timeout is set" if "ray_idle_timeout" in \
            settings.get("culling", {}) else "still read"
        warnings.append(f"ray.idle_timeout is deprecated ({moved}): write it as "
                        f"culling.ray_idle_timeout")
    return warnings
