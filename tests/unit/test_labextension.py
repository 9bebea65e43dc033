"""The JupyterLab extension's pure parts (jest, labextension/test/) and its build output.

The views and commands are tested in a real JupyterLab in Chromium
(tests/browser/test_labextension.py); the server handlers they call in
tests/integration/test_labextension_api.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "labextension"
BUILT = REPO / "redspot" / "labextension"


def test_the_pure_parts_pass_their_jest_tests():
    if not (SOURCE / "node_modules" / ".bin" / "jest").exists():
        pytest.fail("labextension/node_modules is missing: `make deps` installs it")
    result = subprocess.run(["npx", "--no-install", "jest", "--ci", "--silent"], cwd=SOURCE,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Tests:" in result.stderr and "failed" not in result.stderr, result.stderr


def test_the_built_extension_is_the_sources_package_and_installed_for_jupyterlab():
    source = json.loads((SOURCE / "package.json").read_text())
    built = json.loads((BUILT / "package.json").read_text())
    assert built["name"] == source["name"] == "@redspot/labextension"
    assert built["version"] == source["version"]
    remote = built["jupyterlab"]["_build"]["load"]
    assert (BUILT / remote).exists()
    assert (BUILT / "install.json").exists()
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    listed = subprocess.run([jupyter, "labextension", "list"], capture_output=True, text=True,
                            timeout=120)
    line = next(x for x in (listed.stdout + listed.stderr).splitlines()
                if "@redspot/labextension" in x)
    assert "enabled" in line and "OK" in line, line
