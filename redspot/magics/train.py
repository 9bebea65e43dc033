"""``%%ray_train``: the cell is the training loop of every Ray Train worker.

    %%ray_train --workers 2 --zero 3 --steps 5
    model = Net()
    engine = ctx.engine(model)
    for epoch in range(5):
        for x, y in ctx.loader((X, y_true)):
            loss = loss_fn(engine(x), y)
            engine.backward(loss)
            engine.step()
        ctx.report({"loss": loss.item()}, checkpoint=epoch == 4)

Inside the cell: ``ctx`` (``redspot.training.worker.TrainContext``) and its helpers by
name (``engine``, ``loader``, ``shard``, ``report``, ``rank``, ``world_size``,
``config``), and the notebook's variables the cell reads (sent with the run). The run's
result (``redspot.train.TrainResult``) is the cell's value and goes in ``-o NAME``
(default ``train_result``).
"""

from __future__ import annotations

import json
import os

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

HELPERS = ("ctx", "engine", "loader", "shard", "report", "rank", "world_size", "config")
CELL_FILENAME = "<ray_train cell>"


def cell_loop(code: str, inputs: dict):
    """The training loop a cell becomes: run with ``ctx`` and its helpers in scope."""
    compiled = compile(code, CELL_FILENAME, "exec")

    def loop(ctx):
        namespace = dict(inputs)
        namespace.update(ctx=ctx, engine=ctx.engine, loader=ctx.loader, shard=ctx.shard,
                         report=ctx.report, rank=ctx.rank, world_size=ctx.world_size,
                         config=ctx.config)
        exec(compiled, namespace)  # noqa: S102 - the user's own cell, on their cluster

    return loop


def _zero(text: str):
    if text.lower() in ("none", "ddp"):
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--zero {text}: use 0, 1, 2, 3 or none (plain DDP)") from None


@magics_class
class TrainMagics(Magics):
    @magic_arguments()
    @argument("--workers", type=int, default=2, help="training workers (default 2)")
    @argument("--gpus", "--gpus-per-worker", dest="gpus", type=int, default=0,
              help="GPUs per worker (default 0: CPU, gloo)")
    @argument("--cpus", "--cpus-per-worker", dest="cpus", type=int, default=1,
              help="CPUs per worker (default 1)")
    @argument("--zero", default="0", help="ZeRO stage 0-3, or none for plain DDP")
    @argument("--offload", choices=["cpu"], help="offload ZeRO's state to the CPU")
    @argument("--precision", default="fp32", help="fp32, bf16 or fp16 (GPUs only)")
    @argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    @argument("--micro-batch", type=int, default=8, help="micro-batch size per worker")
    @argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    @argument("--deepspeed-config", metavar="VAR_OR_FILE",
              help="a dict variable or a JSON file merged over the generated config")
    @argument("--config", metavar="VAR", help="a dict variable given to the loop as config")
    @argument("--env", metavar="ENVIRONMENT", help="run the workers in this environment")
    @argument("--checkpoint-dir", metavar="URL",
              help="where checkpoints go (default ~/checkpoints; s3://… through s3fs)")
    @argument("--steps", type=int, help="how many reports to expect (sizes the bar)")
    @argument("-o", "--output", default="train_result", metavar="NAME",
              help="the notebook variable for the result (default train_result)")
    @argument("--submit", action="store_true",
              help="run as a Ray job that outlives the kernel; follow it with --attach")
    @argument("--attach", metavar="RUN",
              help="(line magic) follow a submitted run's log to its end, get its result")
    @line_cell_magic
    def ray_train(self, line, cell=None):
        """Train with the cell as every worker's loop (Ray Train, DeepSpeed ZeRO).

        Example::

            %%ray_train --workers 2 --zero 3
            engine = ctx.engine(model)

            %ray_train --attach train-20261122-101500-1a2b3c
        """
        from ..compute.cells import analyze
        from ..train import InvalidTraining, fit

        args = parse_argstring(self.ray_train, line)
        if not args.output.isidentifier():
            raise UsageError(f"-o {args.output}: a Python name is needed")
        ray_magics = self.shell.magics_manager.registry.get("RayMagics")
        session = ray_magics.session if ray_magics is not None else None
        if ray_magics is not None:
            ray_magics._ensure_connected()
        if args.attach:
            return self._attach(args, session)
        if cell is None:
            raise UsageError("%ray_train as a line is --attach RUN; to train, put "
                             "%%ray_train on top of a cell")
        try:
            names = analyze(cell)
        except SyntaxError as e:
            raise UsageError(f"the cell is not valid Python: {e}") from None
        namespace = self.shell.user_ns
        inputs = {n: namespace[n] for n in sorted(names.reads)
                  if n in namespace and n not in HELPERS and not n.startswith("_")}
        options = dict(workers=args.workers, gpus_per_worker=args.gpus,
                       cpus_per_worker=args.cpus, zero=_zero(args.zero),
                       offload=args.offload, precision=args.precision,
                       learning_rate=args.lr, micro_batch_size=args.micro_batch,
                       gradient_accumulation=args.grad_accum,
                       deepspeed_config=self._dict_option(args.deepspeed_config, True),
                       config=self._dict_option(args.config, False),
                       environment=args.env, checkpoint_dir=args.checkpoint_dir,
                       steps=args.steps)
        loop = cell_loop(cell, inputs)
        if args.submit:  # NAME holds the run's id until --attach brings its result
            namespace[args.output] = self._submit(loop, options, session)
            return namespace[args.output]
        try:
            result = fit(loop, session=session, **options)
        except InvalidTraining as e:
            raise UsageError(f"refused before starting: {e}") from None
        namespace[args.output] = result
        return result

    def _submit(self, loop, options, session):
        import ray

        from ..train import InvalidTraining
        from ..training import jobs
        from ..training.fit import (
            cluster_of,
            default_checkpoint_dir,
            new_run_id,
            storage_environment,
            validate,
        )

        options["checkpoint_dir"] = options["checkpoint_dir"] or default_checkpoint_dir()
        try:
            validate(options, cluster_of(ray))  # refused now, not in the job's log
        except InvalidTraining as e:
            raise UsageError(f"refused before starting: {e}") from None
        run_id = new_run_id()
        client = jobs.jobs_client(session.dashboard if session is not None else None)
        jobs.submit(client, loop, options, run_id, storage_environment(os.environ))
        print(f"Submitted training run {run_id} as a Ray job: it goes on without this "
              f"kernel. Follow it with:  %ray_train --attach {run_id}")
        return run_id

    def _attach(self, args, session):
        from ..training import jobs
        from ..training.fit import TrainResult, default_checkpoint_dir

        client = jobs.jobs_client(session.dashboard if session is not None else None)
        try:
            status = jobs.follow(client, args.attach)
        except Exception as e:  # noqa: BLE001 - an unknown run, a lost cluster
            raise UsageError(f"cannot follow {args.attach}: {e}") from None
        found = jobs.read_result(args.checkpoint_dir or default_checkpoint_dir(),
                                 args.attach)
        if status != "SUCCEEDED" or found is None:
            raise UsageError(f"training run {args.attach} ended {status}"
                             + ("" if found else " without a result"))
        result = TrainResult(**found)
        self.shell.user_ns[args.output] = result
        return result

    def _dict_option(self, value: str | None, file_allowed: bool) -> dict | None:
        if not value:
            return None
        namespace = self.shell.user_ns
        if value in namespace:
            found = namespace[value]
            if not isinstance(found, dict):
                raise UsageError(f"{value} is a {type(found).__name__}, not a dict")
            return found
        if file_allowed:
            try:
                with open(value) as f:
                    return json.load(f)
            except OSError as e:
                raise UsageError(f"{value}: no such variable, and the file cannot be read "
                                 f"({e.strerror})") from None
            except ValueError as e:
                raise UsageError(f"{value} is not JSON: {e}") from None
        raise UsageError(f"no variable {value!r} in the notebook")
