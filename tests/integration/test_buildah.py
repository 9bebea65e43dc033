"""The buildah builder for real: a base rootfs the test makes itself, a real registry.

The base is a busybox rootfs whose ``python`` is a stand-in script: ``python -m pip
install -r FILE`` copies FILE into the image (and fails on a package named
``fail-me``), so the rendered Dockerfile's ``COPY`` and ``RUN`` really run in buildah's
chroot, with no network and no base image to pull.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
import requests

from redspot.environments.builders import BuildahBuilder, BuildFailed
from redspot.environments.spec import parse_spec
from tests.helpers import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("docker-registry")
         and shutil.which("busybox")),
    reason="needs buildah, docker-registry and busybox-static (Debian; `make test` installs "
           "them as root)")]

FAKE_PYTHON = """#!/bin/sh
# stands in for `python -m pip install --no-cache-dir -r FILE`
for last; do :; done
if grep -q fail-me "$last"; then echo "ERROR: no such package: fail-me" >&2; exit 1; fi
cp "$last" /opt/installed-requirements.txt
cat /proc/self/uid_map > /opt/uid_map 2>/dev/null || true
echo "installed: $(cat "$last")"
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(textwrap.dedent(f"""
        version: 0.1
        storage:
          filesystem:
            rootdirectory: {root / "data"}
        http:
          addr: 127.0.0.1:{port}
    """))
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{port}"

    def up():
        try:
            return requests.get(f"http://{url}/v2/", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(up, 30, "the registry")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def buildah(root, *args):
    return subprocess.run(["buildah", "--storage-driver", "vfs", "--root", str(root / "storage"),
                           "--runroot", str(root / "run"), *args],
                          capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def base_image(registry, tmp_path_factory):
    """A busybox rootfs with a stand-in python, pushed as test-base; its pinned reference."""
    root = tmp_path_factory.mktemp("base")
    rootfs = root / "context" / "rootfs"
    for folder in ("bin", "usr/bin", "tmp", "opt"):
        (rootfs / folder).mkdir(parents=True)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "opt").chmod(0o1777)
    shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
    for tool in ("sh", "cat", "cp", "echo", "grep", "mkdir", "ls"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    python = rootfs / "usr" / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (root / "context" / "Dockerfile").write_text(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\n")
    image = f"{registry}/test-base:1"
    buildah(root, "bud", "--isolation", "chroot", "-t", image, str(root / "context"))
    buildah(root, "push", "--tls-verify=false", "--digestfile", str(root / "digest"), image,
            f"docker://{image}")
    return f"{registry}/test-base@{(root / 'digest').read_text().strip()}"


def registry_get(registry, path, accept=None):
    headers = {"Accept": accept} if accept else {}
    return requests.get(f"http://{registry}/v2/{path}", headers=headers, timeout=30)


def build(builder, spec):
    lines = []
    try:
        location = asyncio.run(builder.build(spec, spec.tag(builder.base_digest(spec.base)),
                                             lines.append))
    except BuildFailed as e:
        raise AssertionError("\n".join(lines[-30:])) from e
    return location, lines


@pytest.fixture
def helper(test_root, account_prefix):
    """The privileged helper, in this process: as root, builds run rootless as a build
    account of their own (as the environments service's do), in a data folder other
    accounts may pass through."""
    import tempfile

    from redspot.privileged.client import InProcessHelper
    from redspot.privileged.ops import Helper

    data = Path(tempfile.mkdtemp(prefix="buildah-", dir=test_root))
    data.chmod(0o711)
    ops = Helper(data, prefix=account_prefix, isolated=os.geteuid() == 0)
    ops.ensure_service("environments")
    return InProcessHelper(ops, caller="environments")


def image_files(registry, manifest) -> dict[str, bytes]:
    files = {}
    for layer in manifest["layers"]:
        blob = registry_get(registry, f"redspot-env/blobs/{layer['digest']}").content
        data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    files[member.name.lstrip("./")] = tar.extractfile(member).read()
    return files


def test_buildah_builds_the_spec_on_the_base_and_pushes_it(registry, base_image, helper):
    builder = BuildahBuilder(helper, registry, {"test-base": base_image}, tls_verify=False)
    spec = parse_spec({"name": "six", "base": "test-base", "python": ["six==1.16.0"],
                       "env": {"GREETING": "hello world"}}, builder.bases())
    tag = spec.tag(builder.base_digest("test-base"))
    location, log = build(builder, spec)
    assert "installed: six==1.16.0" in log
    assert location.startswith(f"{registry}/redspot-env@sha256:")

    assert tag in registry_get(registry, "redspot-env/tags/list").json()["tags"]
    accept = ("application/vnd.oci.image.manifest.v1+json,"
              "application/vnd.docker.distribution.manifest.v2+json")
    r = registry_get(registry, f"redspot-env/manifests/{tag}", accept)
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == location.split("@", 1)[1]
    manifest = r.json()
    config = registry_get(registry, f"redspot-env/blobs/{manifest['config']['digest']}").json()
    assert "GREETING=hello world" in config["config"]["Env"]
    assert config["config"]["User"] == "1000:100"
    assert config["config"]["Labels"]["io.redspot.environment.tag"] == tag
    files = image_files(registry, manifest)
    assert files["opt/installed-requirements.txt"] == b"six==1.16.0\n"
    assert builder.runtime_env(spec, location) == {"image_uri": location,
                                                   "env_vars": {"GREETING": "hello world"}}


def test_a_failed_buildah_build_pushes_nothing(registry, base_image, helper):
    builder = BuildahBuilder(helper, registry, {"test-base": base_image}, tls_verify=False)
    spec = parse_spec({"name": "bad", "base": "test-base", "python": ["fail-me==1.0"]},
                      builder.bases())
    tag = spec.tag(builder.base_digest("test-base"))
    lines = []
    with pytest.raises(BuildFailed):
        asyncio.run(builder.build(spec, tag, lines.append))
    assert any("no such package: fail-me" in line for line in lines)
    tags = registry_get(registry, "redspot-env/tags/list").json().get("tags") or []
    assert tag not in tags
    work = helper.helper.data_dir / "environments" / "work"
    assert list(work.iterdir()) == []  # its context is gone


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds run as a build account")
def test_a_build_step_runs_as_root_only_inside_the_build_accounts_namespace(
        registry, base_image, helper, account_prefix):
    """A RUN step is uid 0 in its user namespace, which is the build account outside
    (the stand-in pip records /proc/self/uid_map): no step of a build is root here."""
    import pwd

    builder = BuildahBuilder(helper, registry, {"test-base": base_image}, tls_verify=False)
    spec = parse_spec({"name": "probe", "base": "test-base", "python": ["probe==1"]},
                      builder.bases())
    tag = spec.tag(builder.base_digest("test-base"))
    location, log = build(builder, spec)
    assert location.startswith(f"{registry}/redspot-env@sha256:")
    accept = ("application/vnd.oci.image.manifest.v1+json,"
              "application/vnd.docker.distribution.manifest.v2+json")
    manifest = registry_get(registry, f"redspot-env/manifests/{tag}", accept).json()
    uid_map = image_files(registry, manifest)["opt/uid_map"].decode().split()
    account = pwd.getpwnam(f"{account_prefix}bld_team")
    assert account.pw_uid >= 1000 and account.pw_shell == "/usr/sbin/nologin"
    # inside 0 (the base's image user is 1000: the pip step runs as it) maps to ids of
    # the build account's own, outside: never to root
    assert "0" not in uid_map[1::3] and str(account.pw_uid) in uid_map[1::3], uid_map


def test_bases_must_be_pinned_by_digest(tmp_path):
    with pytest.raises(ValueError, match="pin the image by digest"):
        BuildahBuilder(None, "127.0.0.1:5000", {"b": "127.0.0.1:5000/base:latest"})


def test_the_registry_api_answers_json(registry):
    assert json.loads(registry_get(registry, "_catalog").text)["repositories"] is not None
