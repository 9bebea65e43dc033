"""``%ray_connect``, ``%ray_status``, ``%ray_disconnect`` and ``%%ray_remote``.

Example cell::

    %%ray_remote --cpus 4
    model = train(data)      # `train` and `data` come from the notebook
    print("done")            # printed here, as it happens
    model.score(data)        # the last expression is the cell's result

``model`` is back in the notebook afterwards. ``--async -o run`` returns at once with a
handle; ``%ray_result run`` (or ``run.result()``) collects it later.
"""

from __future__ import annotations

import contextvars
import copy
import re
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..compute.cells import analyze
from ..spawner.profiles import ProfileError, parse_size


@magics_class
class RayMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self._session = None
        self._executing = False
        shell.set_custom_exc((_remote_error_type(),), _show_remote_error)
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)

    @property
    def session(self):
        if self._session is None:
            from ..compute.session import RaySession

            self._session = RaySession()
            self._session.watch_idle(busy=lambda: self._executing)
        return self._session

    def _pre_run_cell(self, info=None):
        self._executing = True

    def _post_run_cell(self, result=None):
        # a kernel that runs cells uses its cluster (see RaySession.watch_idle)
        self._executing = False
        if self._session is not None and self._session.target is not None:
            self._session.touch()

    def _ensure_connected(self):
        """Connect first if this kernel is not connected, saying so before the wait."""
        if self.session.connected:
            return
        why = ""
        if self.session.idle_disconnected:
            why = " (it had stopped after a time without use)"
            self.session.idle_disconnected = False
        print(f"Connecting to your Ray cluster{why}...", file=sys.stderr, flush=True)
        what = self.session.connect(progress=_say(sys.stderr))
        print(f"Connected to {what}.", file=sys.stderr, flush=True)

    @magic_arguments()
    @argument("address", nargs="?",
              help="a Ray address: HOST:PORT, or ray://HOST:PORT for Ray Client "
                   "(default: your own cluster)")
    @argument("--local", action="store_true", help="start a Ray cluster inside this kernel")
    @argument("--cluster", metavar="NAME", help="a RayCluster of this namespace (Kubernetes)")
    @line_magic
    def ray_connect(self, line=""):
        """Connect this kernel to Ray: your own cluster by default.

        Example::

            %ray_connect
        """
        from ..compute.transport import TransportError

        args = parse_argstring(self.ray_connect, line)
        try:
            what = self.session.connect(args.address, local=args.local, cluster=args.cluster,
                                        progress=_say(sys.stdout))
        except TransportError as e:
            raise UsageError(str(e)) from None
        print(f"Connected to {what}.")

    @line_magic
    def ray_status(self, line=""):
        """Show the nodes and resources of the connected cluster, and a link to its
        dashboard that works from the browser."""
        from IPython.display import publish_display_data

        self._ensure_connected()
        status = self.session.status()
        publish_display_data(status_bundle(status, dashboard_link(status)))

    @line_magic
    def ray_disconnect(self, line=""):
        """Disconnect this kernel (``--stop`` also stops your cluster)."""
        stop = "--stop" in line.split()
        if stop:
            print("Disconnecting and stopping your Ray cluster...", flush=True)
        self.session.disconnect(stop_head=stop)
        print("Disconnected; your Ray cluster is stopped." if stop else "Disconnected.")

    @magic_arguments()
    @argument("--cpus", type=float, default=1, help="CPUs the cell needs (default 1)")
    @argument("--gpus", type=float, default=0, help="GPUs the cell needs (default 0)")
    @argument("--memory", help="memory the cell needs, e.g. 8GiB")
    @argument("--env", metavar="ENVIRONMENT",
              help="run in this Redspot environment (owner/name, e.g. team/pytorch)")
    @argument("--return", dest="returns", default=None,
              help="only these names come back, comma-separated (default: all it binds)")
    @argument("--no-return", dest="returns", action="store_const", const="",
              help="nothing comes back but the output")
    @argument("--timeout", type=float, help="cancel the cell after this many seconds")
    @argument("--async", dest="background", action="store_true",
              help="return at once; collect with %%ray_result NAME")
    @argument("-o", "--output", metavar="NAME",
              help="with --async: the name of the run's handle in the notebook")
    @cell_magic
    def ray_remote(self, line, cell):
        """Run the cell on your Ray cluster, with the notebook's variables in and out.

        Example::

            %%ray_remote --cpus 2 --return model
            model = fit(features, labels)
        """
        args = _parse_remote_line(self.ray_remote, line)
        if args.cpus < 0 or args.gpus < 0:
            raise UsageError("--cpus and --gpus must be 0 or more")
        if args.timeout is not None and args.timeout <= 0:
            raise UsageError("--timeout must be more than 0 seconds")
        if args.background and not args.output:
            raise UsageError("--async needs -o NAME: the name of the run's handle, "
                             "to collect it with %ray_result NAME")
        if args.output and not (args.output.isidentifier() and args.background):
            raise UsageError("-o NAME goes with --async and needs a Python name")
        try:
            memory = parse_size(args.memory) if args.memory else None
        except ProfileError as e:
            raise UsageError(f"--memory: {e}") from None
        # IPython's transforms (~0.3 ms) only where IPython syntax may be
        code = self.shell.transform_cell(cell) if _MAY_BE_IPYTHON.search(cell) else cell
        if "get_ipython()" in code:
            lines = [n for n, text in enumerate(code.splitlines(), 1) if "get_ipython()" in text]
            raise UsageError(
                f"%%ray_remote cannot run IPython syntax (% magics, ! commands) on the cluster "
                f"(line {', '.join(map(str, lines))}); use Python, e.g. subprocess.run([...])"
            )
        try:
            names = analyze(code)
        except SyntaxError as e:
            raise UsageError(f"the cell is not valid Python: {e}") from None
        writes = names.writes if args.returns is None else [
            n.strip() for n in args.returns.split(",") if n.strip()]
        runtime_env = self._runtime_env(args.env) if args.env else None

        self._ensure_connected()
        from ..compute.session import ResourceError

        try:
            self.session.check_resources(args.cpus, args.gpus, memory)
        except ResourceError as e:
            if not self.session.target.autoscaling:
                raise UsageError(str(e)) from None
            print(f"%%ray_remote: {e}. Waiting for the autoscaler to add a node that "
                  "fits (interrupt the kernel to give up)...", file=sys.stderr)
        user_ns = self.shell.user_ns
        values = {n: user_ns[n] for n in sorted(names.reads)
                  if n in user_ns and not n.startswith("_")}
        shipment = self.session.ship(values, alive=user_ns.__contains__)
        if shipment.refused:
            print("%%ray_remote: these names cannot be sent to the cluster and are left "
                  "out: " + "; ".join(shipment.refused), file=sys.stderr)
        run = self.session.submit(code, shipment, writes, names.last_expression,
                                  cpus=args.cpus, gpus=args.gpus, memory=memory,
                                  runtime_env=runtime_env)
        handle = RayRun(self, run, args.timeout)
        if args.background:
            user_ns[args.output] = handle
            print(f"Running on the cluster; collect it with %ray_result {args.output}.",
                  file=sys.stderr)
            return None
        return handle.result()

    @magic_arguments()
    @argument("name", help="the handle of an --async run")
    @argument("--timeout", type=float, help="stop waiting (the run goes on) after this many s")
    @line_magic
    def ray_result(self, line=""):
        """Wait for an ``--async`` run: show its output, bring its names back, and
        display its last expression.

        Example::

            %ray_result run
        """
        args = parse_argstring(self.ray_result, line)
        handle = self.shell.user_ns.get(args.name)
        if not isinstance(handle, RayRun):
            raise UsageError(f"{args.name!r} is not the handle of a %%ray_remote --async run")
        return handle.result(wait=args.timeout)

    def _runtime_env(self, environment: str) -> dict:
        from ..environments.client import EnvironmentLookupError, EnvironmentsClient

        try:
            return EnvironmentsClient().runtime_env(environment)
        except EnvironmentLookupError as e:
            raise UsageError(str(e)) from None

    def _finish(self, result: dict):
        """Bring a finished run's names into the notebook; its last value, or its error."""
        if "error" in result:
            from ..compute.session import RemoteCellError

            error = result["error"]
            raise RemoteCellError(error["name"], error["value"], error["traceback"],
                                  error.get("type"))
        if result.get("refused"):
            print("%%ray_remote: these names stay on the cluster (they cannot be sent "
                  "back): " + "; ".join(result["refused"]), file=sys.stderr)
        for name, packed in result["outputs"].items():
            # copied out of the object store: arrays and frames come back writable
            self.shell.user_ns[name] = packed.unpack(writable=True)
        last = result.get("last")
        return last.unpack(writable=True) if last is not None else None


_MAY_BE_IPYTHON = re.compile(r"[%!?]")
_parsed_lines: dict = {}


def _parse_remote_line(magic, line: str):
    """``parse_argstring``, remembered per line (a cell is often run again and again)."""
    args = _parsed_lines.get(line)
    if args is None:
        args = parse_argstring(magic, line)
        if len(_parsed_lines) > 256:
            _parsed_lines.clear()
        _parsed_lines[line] = args
    return copy.copy(args)


class RayRun:
    """The handle of a ``%%ray_remote --async`` run.

    ``done()`` says whether it finished, ``result()`` waits for it (as ``%ray_result``
    does), ``cancel()`` stops it, and ``output`` is what it printed so far.
    """

    def __init__(self, magics: RayMagics, run, timeout: float | None):
        self._magics = magics
        self._run = run
        self._timeout = timeout

    def __repr__(self):
        state = "done" if self.done() else "running"
        return f"<%%ray_remote run: {state}>"

    def done(self) -> bool:
        return self._run.done()

    @property
    def output(self) -> str:
        return "".join(e[2] for e in self._run.output.events if e[0] == "stream")

    def cancel(self) -> None:
        self._run.cancel()

    def result(self, wait: float | None = None):
        """Show the run's output, bring its names back, and return its last value.

        ``wait``: stop waiting after this many seconds (TimeoutError; the run goes on)."""
        if wait is not None and not self._run.done():
            import time

            deadline = time.monotonic() + wait
            while not self._run.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the run has not finished after {wait:g} s; it goes on")
                time.sleep(0.05)
        context = contextvars.copy_context()
        self._run.output.attach(lambda event: context.run(_show, event))
        try:
            result = self._run.wait(self._timeout)
        finally:
            self._run.output.detach()
        if self._run.reserved.get("gpus") and "error" not in result:
            # the runs that cost the most say what they cost
            cost = self._run.cost()
            if cost:
                print(cost)
        return self._magics._finish(result)


def _show(event: tuple) -> None:
    """One event of a run's output, in the cell that shows the run."""
    if event[0] == "stream":
        stream = sys.stderr if event[1] == "stderr" else sys.stdout
        stream.write(event[2])
        stream.flush()
    elif event[0] == "display":
        from IPython.display import publish_display_data

        publish_display_data(data=event[1], metadata=event[2])


def _say(stream):
    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    return say


def status_bundle(status: dict, link: str | None) -> dict:
    """``%ray_status``'s output: text, and HTML with the dashboard as a link."""
    import html

    resources = status["resources"]
    where = "your Ray cluster" if status.get("own") else f"Ray cluster {status['address']}"
    summary = (f"{where}: {status['nodes']} node(s), {resources.get('CPU', 0):g} CPU, "
               f"{resources.get('GPU', 0):g} GPU, "
               f"{resources.get('memory', 0) / 1024**3:.1f} GiB memory")
    text = summary + (f"\nDashboard: {link}" if link else "")
    markup = f"<div>{html.escape(summary[0].upper() + summary[1:])}</div>"
    if link:
        href = html.escape(link, quote=True)
        markup += (f'<div>Dashboard: <a href="{href}" target="_blank" rel="noopener">'
                   f"{html.escape(link)}</a></div>")
    return {"text/plain": text[0].upper() + text[1:], "text/html": markup}


def dashboard_link(status: dict) -> str | None:
    """The dashboard's URL as the browser reaches it: for the user's own cluster in a
    hub's server, through that server (``/user/<name>/redspot/ray/dashboard/``)."""
    import os

    if not status.get("dashboard"):
        return None
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not prefix or not status.get("own"):
        return status["dashboard"]
    return f"{prefix.rstrip('/')}/redspot/ray/dashboard/"


def _remote_error_type():
    from ..compute.session import RemoteCellError

    return RemoteCellError


def _show_remote_error(shell, etype, evalue, tb, tb_offset=None):
    """Show a remote cell's error with the cell's own traceback, not the magic's frames."""
    hint = ""
    if evalue.name == "ValueError" and "read-only" in evalue.value:
        hint = ("\nLarge notebook values reach the cluster read-only (they are shared, not "
                "copied): change a copy in the cell, e.g. x = x.copy()")
    print(f"Traceback (on the Ray cluster):\n{evalue.traceback}{evalue.name}: {evalue.value}"
          f"{hint}", file=sys.stderr)
    return None
