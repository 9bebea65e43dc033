"""Environment specs: validation, normalisation, identity; the pure renderings; the catalog."""

import pytest

from redspot.environments.builders import merge_requirements
from redspot.environments.catalog import Catalog
from redspot.environments.render import build_context, dockerfile, runtime_env
from redspot.environments.spec import EnvironmentSpec, SpecError, parse_spec

BASES = {"singleuser": "CPU", "singleuser-gpu": "CUDA"}


def spec(**fields):
    return parse_spec({"name": "e", **fields}, BASES)


def test_specs_are_normalised():
    s = spec(python=["Torch==2.13.0", "numpy >= 2", "Scikit_Learn[extra]", "numpy >= 2"][:3],
             debian=["graphviz", "curl", "graphviz"], env={"B": "2", "A": "1"})
    assert s.python == ("numpy>=2", "scikit-learn[extra]", "torch==2.13.0")
    assert s.debian == ("curl", "graphviz")
    assert s.env == (("A", "1"), ("B", "2"))
    assert s.base == "singleuser"  # the first base is the default
    assert EnvironmentSpec.from_dict(s.to_dict()) == s


def test_the_tag_depends_on_build_inputs_only():
    a = spec(python=["numpy>=2", "torch==2.13.0"], description="mine")
    b = parse_spec({"name": "other", "python": ["torch==2.13.0", "NumPy>=2"]}, BASES)
    assert a.tag("sha256:1") == b.tag("sha256:1")  # name, order, case: same build
    assert a.tag("sha256:1") != a.tag("sha256:2")  # a new base digest: a new build
    assert a.tag("sha256:1") != spec(python=["numpy>=2"]).tag("sha256:1")
    assert a.tag("sha256:1") != spec(python=["numpy>=2", "torch==2.13.0"],
                                     env={"X": "1"}).tag("sha256:1")


@pytest.mark.parametrize("fields, field, message", [
    ({"python": "numpy"}, "python", "expected a list"),
    ({"python": ["numpy", "NumPy>=2"]}, "python", "listed more than once: numpy"),
    ({"python": ["x"] * 101}, "python", "at most 100 entries"),
    ({"python": ["-r /etc/passwd"]}, "python[0]", "is not a package requirement"),
    ({"python": ["numpy ; os_name == 'posix' | id"]}, "python[0]", "is not a package"),
    ({"debian": ["Bad_Name"]}, "debian[0]", "is not a Debian package name"),
    ({"debian": ["a"]}, "debian[0]", "is not a Debian package name"),
    ({"env": {"1X": "a"}}, "env.1X", "not a variable name"),
    ({"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "env.JUPYTERHUB_API_TOKEN", "set by Redspot"),
    ({"env": {"X": "a\\b"}}, "env.X", "may not contain"),
    ({"env": {"X": "`id`"}}, "env.X", "may not contain"),
    ({"env": {"X": 5}}, "env.X", "expected a string"),
    ({"env": ["X=1"]}, "env", "expected an object"),
    ({"description": "a\nb"}, "description", "control characters"),
    ({"description": "x" * 501}, "description", "at most 500 characters"),
])
def test_bad_fields_are_named(fields, field, message):
    with pytest.raises(SpecError) as e:
        spec(**fields)
    assert e.value.field == field
    assert message in str(e.value)


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(SpecError, match="expected a JSON object"):
        parse_spec(["numpy"], BASES)


def test_dockerfile_keeps_requirements_out_of_shell_commands():
    s = spec(python=["torch==2.13.0"], debian=["graphviz", "libgomp1=12.2.0-14"],
             env={"MODE": 'say "hi"'})
    text = dockerfile(s, "registry/singleuser@sha256:" + "0" * 64, "env-abc")
    assert text == (
        "FROM registry/singleuser@sha256:" + "0" * 64 + "\n"
        'LABEL io.redspot.environment.tag="env-abc"\n'
        "USER 0\n"
        'SHELL ["/bin/bash", "-o", "pipefail", "-c"]\n'
        "# hadolint ignore=DL3008\n"
        "RUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends \\\n"
        "      graphviz \\\n"
        "      libgomp1=12.2.0-14 \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        "USER 1000:100\n"
        "COPY --chown=1000:100 requirements.txt /tmp/redspot/requirements.txt\n"
        "RUN python -m pip install --no-cache-dir -r /tmp/redspot/requirements.txt\n"
        'ENV MODE="say \\"hi\\""\n'
    )
    assert "torch" not in text
    assert build_context(s, "b", "t")["requirements.txt"] == "torch==2.13.0\n"


def test_dockerfile_without_packages_is_just_the_base_as_the_notebook_user():
    assert dockerfile(spec(), "b@sha256:1", "t") == (
        'FROM b@sha256:1\nLABEL io.redspot.environment.tag="t"\nUSER 1000:100\n')


def test_runtime_env():
    s = spec(env={"A": "1"})
    assert runtime_env(s, python="/envs/t/bin/python") == {
        "py_executable": "/envs/t/bin/python", "env_vars": {"A": "1"}}
    assert runtime_env(spec(), image="r/e:t") == {"image_uri": "r/e:t"}


def test_user_pins_win_over_the_base():
    base = ["six==1.17.0", "jupyterlab==4.6.6", "torch==2.13.0+cpu"]
    assert merge_requirements(base, ("Six==1.16.0",)) == [
        "jupyterlab==4.6.6", "torch==2.13.0+cpu", "Six==1.16.0"]


def test_catalog_claims_a_build_once_and_retries_failures(tmp_path):
    catalog = Catalog(tmp_path / "c.sqlite")
    assert catalog.claim_build("env-1") is True
    assert catalog.claim_build("env-1") is False  # building
    catalog.finish_build("env-1", error="boom")
    assert catalog.build("env-1").status == "failed"
    assert catalog.claim_build("env-1") is True  # a failed build may be tried again
    catalog.finish_build("env-1", location="/envs/env-1/bin/python")
    assert catalog.claim_build("env-1") is False  # ready: never built again
    assert catalog.build("env-1").location == "/envs/env-1/bin/python"


def test_a_build_interrupted_by_a_restart_is_failed_not_ready(tmp_path):
    Catalog(tmp_path / "c.sqlite").claim_build("env-2")
    reader = Catalog(tmp_path / "c.sqlite")  # e.g. the spawner, reading
    assert reader.build("env-2").status == "building"
    reader.recover()  # the service, starting again
    assert Catalog(tmp_path / "c.sqlite").build("env-2").status == "failed"
