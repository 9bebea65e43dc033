"""``chp_quiet.js``: the proxy's handler of uncaught exceptions no longer logs a client's
connection reset, and still logs everything else."""

import shutil
import subprocess

import pytest

from redspot.hub.app import CHP_QUIET

PROXY_LIKE = """
process.on("uncaughtException", (e) => console.log("LOGGED " + e.message));
setTimeout(() => { const e = new Error("read ECONNRESET"); e.code = "ECONNRESET"; throw e; });
setTimeout(() => { throw new Error("something else"); }, 10);
setTimeout(() => console.log("still serving"), 30);
"""


def test_a_connection_reset_is_not_logged_and_other_errors_are():
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed (make installs it)")
    out = subprocess.run([node, "--require", str(CHP_QUIET), "-e", PROXY_LIKE],
                         capture_output=True, text=True, timeout=30).stdout
    assert out.splitlines() == ["LOGGED something else", "still serving"]
