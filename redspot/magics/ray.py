"""``%ray_connect``, ``%ray_status``, ``%ray_disconnect`` and ``%%ray_remote``.

Example cell::

    %%ray_remote --cpus 4
    model = train(data)      # `train` and `data` come from the notebook
    print("done")            # printed here, as it happens
    model.score(data)        # the last expression is the cell's result

``model`` is back in the notebook afterwards.
"""

from __future__ import annotations

import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..compute.cells import analyze
from ..spawner.profiles import ProfileError, parse_size

#: Values whose pickling is never in doubt (checked one by one otherwise).
_SAFE_TYPES = (int, float, complex, str, bytes, bool, type(None))


@magics_class
class RayMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self._session = None
        shell.set_custom_exc((_remote_error_type(),), _show_remote_error)

    @property
    def session(self):
        if self._session is None:
            from ..compute.session import RaySession

            self._session = RaySession()
        return self._session

    def _ensure_connected(self):
        if not self.session.connected:
            print(f"Connecting to {self.session.connect()}...", file=sys.stderr)

    @magic_arguments()
    @argument("address", nargs="?", help="a Ray address (default: your own cluster)")
    @argument("--local", action="store_true", help="start a Ray cluster inside this kernel")
    @line_magic
    def ray_connect(self, line=""):
        """Connect this kernel to Ray: your own cluster by default.

        Example::

            %ray_connect
        """
        args = parse_argstring(self.ray_connect, line)
        print(f"Connected to {self.session.connect(args.address, local=args.local)}.")

    @line_magic
    def ray_status(self, line=""):
        """Show the nodes and resources of the connected cluster, and its dashboard."""
        self._ensure_connected()
        status = self.session.status()
        resources = status["resources"]
        print(f"Ray cluster {status['address']}: {status['nodes']} node(s), "
              f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU, "
              f"{resources.get('memory', 0) / 1024**3:.1f} GiB")
        if status["dashboard"]:
            print(f"Dashboard: {status['dashboard']}")
        return status

    @line_magic
    def ray_disconnect(self, line=""):
        """Disconnect this kernel (``--stop`` also stops your cluster)."""
        self.session.disconnect(stop_head="--stop" in line.split())
        print("Disconnected.")

    @magic_arguments()
    @argument("--cpus", type=float, default=1, help="CPUs the cell needs (default 1)")
    @argument("--gpus", type=float, default=0, help="GPUs the cell needs (default 0)")
    @argument("--memory", help="memory the cell needs, e.g. 8GiB")
    @argument("--return", dest="returns", default=None,
              help="only these names come back, comma-separated (default: all it binds)")
    @argument("--no-return", dest="returns", action="store_const", const="",
              help="nothing comes back but the output")
    @argument("--timeout", type=float, help="cancel the cell after this many seconds")
    @cell_magic
    def ray_remote(self, line, cell):
        """Run the cell on your Ray cluster, with the notebook's variables in and out.

        Example::

            %%ray_remote --cpus 2 --return model
            model = fit(features, labels)
        """
        args = parse_argstring(self.ray_remote, line)
        if args.cpus < 0 or args.gpus < 0:
            raise UsageError("--cpus and --gpus must be 0 or more")
        try:
            memory = parse_size(args.memory) if args.memory else None
        except ProfileError as e:
            raise UsageError(f"--memory: {e}") from None
        code = self.shell.transform_cell(cell)
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
        inputs = self._inputs(names.reads)

        self._ensure_connected()
        from ..compute.session import ResourceError

        try:
            self.session.check_resources(args.cpus, args.gpus, memory)
        except ResourceError as e:
            raise UsageError(str(e)) from None
        result = None
        for event in self.session.run(code, inputs, writes, names.last_expression,
                                      cpus=args.cpus, gpus=args.gpus, memory=memory,
                                      timeout=args.timeout):
            if event[0] == "stream":
                stream = sys.stderr if event[1] == "stderr" else sys.stdout
                stream.write(event[2])
                stream.flush()
            else:
                result = event[1]
        if "error" in result:
            from ..compute.session import RemoteCellError

            error = result["error"]
            raise RemoteCellError(error["name"], error["value"], error["traceback"],
                                  error.get("type"))
        for name, value in result["outputs"].items():
            self.shell.user_ns[name] = _writable(value)
        return _writable(result["last"])

    def _inputs(self, reads: set[str]) -> dict:
        """The notebook values the cell reads; unpicklable ones are named and left out."""
        import cloudpickle

        inputs, refused = {}, []
        for name in sorted(reads):
            if name not in self.shell.user_ns or name.startswith("_"):
                continue
            value = self.shell.user_ns[name]
            if not isinstance(value, _SAFE_TYPES) and not _is_array(value):
                try:
                    cloudpickle.dumps(value)
                except Exception as e:
                    refused.append(f"{name} ({type(value).__name__}: {e})")
                    continue
            inputs[name] = value
        if refused:
            print("%%ray_remote: these names cannot be sent to the cluster and are left "
                  "out: " + "; ".join(refused), file=sys.stderr)
        return inputs


def _is_array(value) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def _writable(value):
    """Arrays from Ray's object store are read-only; the notebook gets writable ones."""
    if _is_array(value) and not value.flags.writeable:
        return value.copy()
    return value


def _remote_error_type():
    from ..compute.session import RemoteCellError

    return RemoteCellError


def _show_remote_error(shell, etype, evalue, tb, tb_offset=None):
    """Show a remote cell's error with the cell's own traceback, not the magic's frames."""
    print(f"Traceback (on the Ray cluster):\n{evalue.traceback}{evalue.name}: {evalue.value}",
          file=sys.stderr)
    return None
