"""The privileged helper process and how to ask it.

    python -m redspot.privileged --data-dir DIR --socket PATH [--prefix P]
                                 [--server-python PY] [--build-timeout S] [--build-max-size B]

``redspot up`` starts it (as root, when tenants are isolated) before the hub, and it ends
with the hub. It listens on a Unix socket that every account may connect to, and tells
callers apart by the kernel's word (``SO_PEERCRED``), not by anything they send: root is
the hub (and ``redspot`` commands run by the operator); a service's own account is that
service. Each operation says who may ask for it; anything else is refused, and logged.

A request is one JSON line, ``{"op": "ensure_user", "args": {...}}``; the answer is
zero or more ``{"output": "line"}`` (a build's log, as it comes) and then
``{"result": ...}`` or ``{"error": "why"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import signal
import socket
import socketserver
import struct
import sys
import threading
from pathlib import Path

from .accounts import SERVICES, service_account_name
from .ops import Helper, HelperError

log = logging.getLogger("redspot.helper")

MAX_REQUEST = 1 << 20

#: Every operation, and who may ask for it: deny by default.
OPERATIONS: dict[str, frozenset[str]] = {
    "ping": frozenset({"hub", *SERVICES}),
    "prepare_data_dir": frozenset({"hub"}),
    "ensure_user": frozenset({"hub"}),
    "stop_user_processes": frozenset({"hub"}),
    "retire_user": frozenset({"hub"}),
    "restore_user": frozenset({"hub"}),
    "ensure_service": frozenset({"hub"}),
    "build_venv": frozenset({"environments"}),
    "build_image": frozenset({"environments"}),
    "apply_share": frozenset({"sharing"}),
    "revoke_share": frozenset({"sharing"}),
}


class Refused(HelperError):
    pass


def dispatch(helper: Helper, caller: str | None, op: object, args: object, output) -> object:
    """Run ``op`` for ``caller`` if the table lets them; the one way into the helper."""
    if not isinstance(op, str) or op not in OPERATIONS:
        raise Refused(f"unknown operation {op!r}; the helper does: {', '.join(OPERATIONS)}")
    if caller not in OPERATIONS[op]:
        raise Refused(f"{caller or 'this account'} may not ask for {op}")
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise Refused("args: expected an object")
    if op == "ping":
        return {"caller": caller}
    method = getattr(helper, op)
    try:
        if op in ("build_venv", "build_image"):
            return method(**args, output=output)
        return method(**args)
    except TypeError as e:
        raise Refused(f"{op}: {e}") from None


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, helper: Helper):
        self.helper = helper
        super().__init__(path, _Handler)

    def caller(self, uid: int) -> str | None:
        """Who a peer is, by the uid the kernel says it runs as: root (or, without
        isolation, this account) is the hub; a service's own account is that service."""
        if uid == 0 or (not self.helper.isolated and uid == os.geteuid()):
            return "hub"
        if not self.helper.isolated:
            return None
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return None
        return next((service for service in SERVICES
                     if name == service_account_name(service, self.helper.prefix)), None)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                        struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", creds)
        caller = self.server.caller(uid)
        lock = threading.Lock()

        def send(message: dict) -> None:
            with lock:
                self.wfile.write(json.dumps(message).encode() + b"\n")
                self.wfile.flush()

        try:
            line = self.rfile.readline(MAX_REQUEST)
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            send({"error": "the request is not one JSON object on one line"})
            return
        op = request.get("op")
        try:
            result = dispatch(self.server.helper, caller, op, request.get("args", {}),
                              lambda text: send({"output": text}))
        except Refused as e:
            log.warning("Refused %r to uid %d (pid %d): %s", op, uid, pid, e)
            send({"error": str(e)})
        except HelperError as e:
            log.warning("%s for %s failed: %s", op, caller, e)
            send({"error": str(e)})
        except BrokenPipeError:
            return
        except Exception as e:  # noqa: BLE001 - the caller hears of it, the helper goes on
            log.exception("%s for %s failed", op, caller)
            send({"error": f"{op} failed: {type(e).__name__}: {e}"})
        else:
            send({"result": result})


def serve(helper: Helper, path: Path) -> _Server:
    """Listen on ``path`` (replacing a stale socket); the caller runs ``serve_forever``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    os.chmod(path.parent, 0o711)
    path.unlink(missing_ok=True)
    server = _Server(str(path), helper)
    os.chmod(path, 0o666)  # anyone may connect; SO_PEERCRED says who they are
    return server


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m redspot.privileged",
                                     description="Redspot's privileged helper")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--prefix", default="redspot-")
    parser.add_argument("--server-python")
    parser.add_argument("--build-timeout", type=float, default=3600)
    parser.add_argument("--build-max-size", type=int, default=20 << 30)
    parser.add_argument("--no-isolation", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(levelname).1s %(asctime)s redspot-helper] %(message)s")
    os.umask(0o077)
    try:
        helper = Helper(args.data_dir, prefix=args.prefix, isolated=not args.no_isolation,
                        server_python=args.server_python, build_timeout=args.build_timeout,
                        build_max_bytes=args.build_max_size)
    except HelperError as e:
        parser.error(str(e))
    server = serve(helper, args.socket)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    log.info("Listening on %s", args.socket)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        args.socket.unlink(missing_ok=True)
