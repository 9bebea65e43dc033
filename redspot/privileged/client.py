"""Asking the privileged helper: over its socket, or in this process when there is none.

Both kinds answer ``call(op, output=None, **args)`` the same way, so callers (the
spawner, ``redspot up``, the environments service) do not care which they have:

- ``SocketHelper(path)``: the helper process that ``redspot up`` starts as root;
- ``InProcessHelper(helper)``: the same operations run here (no isolation: the hub and
  its services share one account, and nothing needs root).

``helper_for`` picks one: the socket when there is one, else the operations in process.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

from .ops import Helper, HelperError
from .server import dispatch

Output = Callable[[str], None]


class SocketHelper:
    def __init__(self, path: str, timeout: float | None = None):
        self.path = str(path)
        self.timeout = timeout

    def call(self, op: str, output: Output | None = None, **args) -> object:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except OSError as e:
            raise HelperError(f"Redspot's privileged helper cannot be reached at {self.path} "
                              f"({e.strerror or e}); is `redspot up` running?") from None
        with sock, sock.makefile("rb") as answers:
            sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            for line in answers:
                message = json.loads(line)
                if "output" in message:
                    if output is not None:
                        output(message["output"])
                    continue
                if "error" in message:
                    raise HelperError(message["error"])
                return message.get("result")
        raise HelperError(f"the privileged helper closed the connection during {op}")


class InProcessHelper:
    def __init__(self, helper: Helper, caller: str = "hub"):
        self.helper = helper
        self.caller = caller

    def call(self, op: str, output: Output | None = None, **args) -> object:
        return dispatch(self.helper, self.caller, op, args, output or (lambda line: None))


def helper_for(socket: str, data_dir, caller: str = "hub", **options):
    """The helper process at ``socket``, or (no socket: ``redspot up`` runs none, as
    without isolation) ``Helper(data_dir, **options)``'s operations in this process, asked
    as ``caller``."""
    if socket:
        return SocketHelper(socket)
    return InProcessHelper(Helper(Path(data_dir), **options), caller=caller)
