"""Run a cell in a kernel of a real single-user server, over its websocket, like JupyterLab."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


def start_kernel(hub_url: str, user: str, token: str) -> str:
    """A new kernel in ``user``'s server; its id."""
    r = requests.post(f"{hub_url}/user/{user}/api/kernels",
                      headers={"Authorization": f"token {token}"}, json={}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def run_cell(hub_url: str, user: str, token: str, code: str, kernel: str | None = None,
             timeout: float = 60, messages: list | None = None) -> str:
    """Execute ``code``; return its stream output, results and errors as one string.
    ``messages``, when given, gets every (text) message the kernel sent meanwhile, widget
    updates (``comm_msg``) included."""
    headers = {"Authorization": f"token {token}"}
    if kernel is None:
        r = requests.post(f"{hub_url}/user/{user}/api/kernels", headers=headers, json={},
                          timeout=60)
        assert r.status_code == 201, r.text
        kernel = r.json()["id"]
    ws_url = hub_url.replace("http", "ws", 1) + f"/user/{user}/api/kernels/{kernel}/channels"
    request = HTTPRequest(ws_url, headers=headers)
    # a loop of its own, in a thread: the caller's thread may already run one (Playwright)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _execute(request, code, timeout, messages)).result()


async def _execute(request: HTTPRequest, code: str, timeout: float,
                   messages: list | None = None) -> str:
    conn = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    conn.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "tests",
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    output = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await conn.read_message()
                if raw is None:
                    raise ConnectionError("the kernel's websocket closed")
                if isinstance(raw, bytes):
                    continue  # a message with binary buffers (widget state): not output
                msg = json.loads(raw)
                if messages is not None:  # widget updates from threads may have no parent
                    messages.append(msg)
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    output.append(content["text"])
                elif kind in ("execute_result", "display_data"):
                    output.append(content["data"].get("text/plain", ""))
                elif kind == "error":
                    output.append(f"{content['ename']}: {content['evalue']}")
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(output)
    finally:
        conn.close()


#: An IPython shell in a process of its own, connected to the Ray head at ``argv[1]``
#: with Redspot's magics: it runs the JSON list of cells on its standard input and
#: prints ``RESULT`` and the JSON of the dict ``out`` the cells filled (``error``: the
#: first error).
RAY_KERNEL = textwrap.dedent("""
    import json, sys
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("redspot.magics")
    shell.run_line_magic("ray_connect", sys.argv[1])
    out = {}
    shell.user_ns["out"] = out
    for cell in json.loads(sys.stdin.read()):
        result = shell.run_cell(cell)
        if result.error_in_exec is not None or result.error_before_exec is not None:
            error = result.error_in_exec or result.error_before_exec
            out.setdefault("error", f"{type(error).__name__}: {error}")
            if not isinstance(error, KeyboardInterrupt):  # a kernel goes on after one
                break
    shell.run_line_magic("ray_disconnect", "")
    print("RESULT " + json.dumps(out, default=str))
""")


def ipython_shell():
    """The test process's one IPython shell, whichever module asks first (IPython's
    testing app starts one per process; a second ``start_ipython()`` returns None, and
    a shell of another class beside it would be refused: one singleton per process)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    return start_ipython() or InteractiveShell.instance()
