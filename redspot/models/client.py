"""The notebook's side of the model registry: registering, listing and loading models.

Talks to the registry with MLflow's own client, at ``MLFLOW_TRACKING_URI`` with
``MLFLOW_TRACKING_TOKEN`` (a Redspot server has both). ``register`` is what the
registration widget and ``%register_model`` call:

1. the name, tags, metrics and description are checked (``validation.py``) before
   anything is sent;
2. the flavor is detected (PyTorch, scikit-learn, a generic pyfunc) and the signature
   inferred from a sample input, when one is given;
3. a run (its metrics, the lineage tags) and a logged model are made, the model is saved
   to a temporary folder and its files uploaded one by one, streamed, with progress, the
   ``MLmodel`` file last; the listing is then compared with what was sent;
4. only then is the logged model marked READY and the version made (the service refuses
   a version of an unfinished upload, whatever the client). Any failure, an interrupt
   included, marks the logged model and the run FAILED and deletes what was uploaded:
   no version ever points at missing artifacts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

from .lineage import current_ray_job
from .lineage import lineage as lineage_tags
from .validation import (
    InvalidInput,
    check_description,
    check_metrics,
    check_name,
    check_tags,
)

log = logging.getLogger("redspot.models")

#: ``progress(done_bytes, total_bytes, what)`` during an upload.
Progress = Callable[[int, int, str], None]
CHUNK = 1 << 20


class RegistrationError(RuntimeError):
    """Registering failed; nothing was registered (the message says why)."""


@dataclass
class Registered:
    """A registered model version."""

    name: str
    version: str
    flavor: str
    model_id: str
    run_id: str
    url: str  # the version in the registry's UI, a path on the hub's origin
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def _repr_html_(self) -> str:
        from html import escape

        return (f"Registered <b>{escape(self.name)}</b> version <b>{escape(self.version)}</b>"
                f" ({escape(self.flavor)}): <a href='{escape(self.url)}' target='_blank'>"
                f"open in the registry</a>")


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistrationError(
            "MLFLOW_TRACKING_URI is not set: the model registry is reached from a Redspot "
            "server (the hub's services.models must be enabled)")
    return uri.rstrip("/")


def ui_url(name: str | None = None, version: str | None = None) -> str:
    """The registry's UI, or a model or version in it: a path on the hub's origin, or a URL
    of the registry's own origin with per-user subdomains (``REDSPOT_MODELS_PUBLIC_URL``)."""
    public = os.environ.get("REDSPOT_MODELS_PUBLIC_URL") or (
        os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/services/models/")
    base = public.rstrip("/") + "/#/models"
    if name is None:
        return base
    url = f"{base}/{quote(name, safe='')}"
    return f"{url}/versions/{version}" if version is not None else url


# -- flavors ---------------------------------------------------------------------------

def detect_flavor(model) -> str:
    """``pytorch`` for a torch module, ``sklearn`` for a scikit-learn estimator,
    ``pyfunc`` for an ``mlflow.pyfunc.PythonModel`` or a plain function."""
    for cls in type(model).__mro__:
        module = cls.__module__ or ""
        if module.startswith("torch.nn") and cls.__name__ == "Module":
            return "pytorch"
        if module.startswith("sklearn.") and cls.__name__ == "BaseEstimator":
            return "sklearn"
    if _is_python_model(model) or callable(model) and not isinstance(model, type):
        return "pyfunc"
    raise InvalidInput(
        f"cannot register a {type(model).__module__}.{type(model).__qualname__}: a model is a "
        "torch.nn.Module, a scikit-learn estimator, an mlflow.pyfunc.PythonModel or a "
        "function of the input")


def predict(model, flavor: str, sample):
    """The model's output on ``sample`` (for the signature)."""
    if flavor == "pytorch":
        import torch

        tensor = sample if isinstance(sample, torch.Tensor) else torch.as_tensor(sample)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model(tensor).detach().cpu().numpy()
        finally:
            model.train(was_training)
    if flavor == "sklearn":
        return model.predict(sample)
    if _is_python_model(model):  # predict(model_input) or, older, predict(context, input)
        import inspect

        parameters = list(inspect.signature(model.predict).parameters)
        return (model.predict(None, sample) if parameters[:1] == ["context"]
                else model.predict(sample))
    return model(sample)


def _is_python_model(model) -> bool:
    return any(c.__name__ == "PythonModel" and (c.__module__ or "").startswith("mlflow.pyfunc")
               for c in type(model).__mro__)


def signature(model, flavor: str, sample):
    """An MLflow signature inferred from ``sample`` and the model's output on it."""
    from mlflow.models import infer_signature

    if sample is None:
        return None
    try:
        output = predict(model, flavor, sample)
    except Exception as e:
        raise InvalidInput(f"the model failed on the sample input "
                           f"({type(e).__name__}: {e}); give an input it accepts, or none"
                           ) from e
    as_input = sample
    if flavor == "pytorch" and hasattr(sample, "detach"):
        as_input = sample.detach().cpu().numpy()
    return infer_signature(as_input, output)


def save(model, flavor: str, path: Path, mlflow_model, model_signature) -> None:
    """Save ``model`` in MLflow's format in ``path`` (a folder that must not exist).

    The PyTorch and scikit-learn flavors get their default requirements pinned to this
    kernel's versions: MLflow would otherwise infer them by loading the saved model again
    in a subprocess (seconds, and the model's size in memory once more)."""
    kwargs = {"signature": model_signature, "mlflow_model": mlflow_model}
    if flavor == "pytorch":
        import mlflow.pytorch

        # pickled (with cloudpickle: a class defined in the notebook travels by value);
        # MLflow's default, a torch.export graph, fails on many notebook models
        mlflow.pytorch.save_model(
            model, str(path), serialization_format="pickle",
            pip_requirements=mlflow.pytorch.get_default_pip_requirements(), **kwargs)
    elif flavor == "sklearn":
        import mlflow.sklearn

        mlflow.sklearn.save_model(
            model, str(path), serialization_format="cloudpickle",
            pip_requirements=mlflow.sklearn.get_default_pip_requirements(), **kwargs)
    else:  # a PythonModel, or a function MLflow wraps in one
        import mlflow.pyfunc

        if not _is_python_model(model):
            # MLflow wants requirements stated for a function ([] means "infer them"),
            # and its one parameter named model_input
            kwargs["extra_pip_requirements"] = []
            model = _as_predict(model)
        mlflow.pyfunc.save_model(str(path), python_model=model, **kwargs)


def _as_predict(function):
    def predict(model_input):  # a closure: pickled by value, with the user's function
        return function(model_input)

    return predict


# -- uploads ---------------------------------------------------------------------------

class _Reading:
    """A file read in chunks for ``requests``, reporting each chunk; its length is known
    (``Content-Length``: nothing is buffered on either side)."""

    def __init__(self, path: Path, report: Callable[[int], None]):
        self.file = path.open("rb")
        self.size = path.stat().st_size
        self.report = report

    def __len__(self):
        return self.size

    def read(self, n=-1):
        # whole chunks, whatever http.client asks for (8 KiB): it sends what it gets
        chunk = self.file.read(CHUNK)
        if chunk:
            self.report(len(chunk))
        return chunk

    def close(self):
        self.file.close()


def _files(folder: Path) -> list[tuple[str, Path]]:
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*")
                   if p.is_file())
    # the MLmodel file last: a source holding it is a finished upload
    return sorted(files, key=lambda item: item[0] == "MLmodel")


class Transfer:
    """Moves a model's files to and from its artifact location through the registry."""

    def __init__(self, tracking: str, progress: Progress | None = None):
        self.tracking = tracking
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")  # what MLflow's client sends
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
        self.verify = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or not insecure
        self.progress = progress

    def _url(self, location: str, rel: str = "") -> str:
        parsed = urlparse(location)
        path = parsed.path.strip("/") + (f"/{rel}" if rel else "")
        return f"{self.tracking}/api/2.0/mlflow-artifacts/artifacts/{quote(path)}"

    def upload(self, folder: Path, location: str) -> None:
        import requests

        files = _files(folder)
        total = sum(p.stat().st_size for _, p in files)
        done = 0

        def report(n):
            nonlocal done
            done += n
            if self.progress:
                self.progress(done, total, "uploading")

        if self.progress:
            self.progress(0, total, "uploading")
        proxied = urlparse(location).scheme == "mlflow-artifacts"
        if not proxied:  # a store the client writes to itself (s3:// with credentials)
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            repo = get_artifact_repository(location)
        for rel, path in files:
            if not proxied:
                head = rel.rsplit("/", 1)[0] if "/" in rel else None
                repo.log_artifact(str(path), head)
                report(path.stat().st_size)
                continue
            body = _Reading(path, report)
            try:
                response = requests.put(self._url(location, rel), data=body,
                                        headers=self.headers, verify=self.verify,
                                        timeout=(30, 600))
            finally:
                body.close()
            if response.status_code != 200:
                raise RegistrationError(f"uploading {rel} failed: HTTP "
                                        f"{response.status_code} {response.text[:300]}")
        if self.progress:
            self.progress(total, total, "checking")
        self.verify_listing(folder, location, files)

    def listing(self, location: str) -> dict[str, int | None]:
        """Every file under ``location`` and its size, as the store says."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        repo = get_artifact_repository(location)
        found: dict[str, int | None] = {}

        def walk(path=None):
            for info in repo.list_artifacts(path):
                if info.is_dir:
                    walk(info.path)
                else:
                    found[info.path] = info.file_size

        walk()
        return found

    def verify_listing(self, folder: Path, location: str, files) -> None:
        """Every file is there with its size (the store's word, not the client's)."""
        found = self.listing(location)
        for rel, path in files:
            size = path.stat().st_size
            if found.get(rel, -1) not in (size, None):
                raise RegistrationError(
                    f"after the upload the store has {rel} with {found.get(rel)} bytes, "
                    f"{size} were sent")

    def download(self, location: str, folder: Path, files: dict[str, int | None]) -> None:
        """The files of ``location`` into ``folder``, streamed, with progress."""
        import requests

        if urlparse(location).scheme != "mlflow-artifacts":
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            get_artifact_repository(location).download_artifacts("", str(folder))
            return
        total, done = sum(size or 0 for size in files.values()), 0
        for rel in files:
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with requests.get(self._url(location, rel), headers=self.headers,
                              verify=self.verify, stream=True, timeout=(30, 600)) as response:
                if response.status_code != 200:
                    raise RegistrationError(f"downloading {rel} failed: HTTP "
                                            f"{response.status_code} {response.text[:300]}")
                with target.open("wb") as f:
                    for chunk in response.iter_content(CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        if self.progress:
                            self.progress(done, total, "downloading")

    def delete(self, location: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(location).delete_artifacts()


def model_bytes(model, flavor: str) -> int:
    """About how large ``model`` is saved (PyTorch: its parameters and buffers), or 0."""
    if flavor != "pytorch":
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def scratch_dir(size: int) -> str | None:
    """Where a model of ``size`` bytes is saved before its upload (and downloaded before
    its load): memory (``/dev/shm``) when it has room for it twice over, so the bytes
    are not written to disk once more on their way; else the default temporary folder."""
    shm = "/dev/shm"
    try:
        free = shutil.disk_usage(shm).free
    except OSError:
        return None
    if size and os.access(shm, os.W_OK) and free > 2 * size + (256 << 20):
        return shm
    return None


# -- registering -----------------------------------------------------------------------

def experiment_id(client, user: str | None) -> str:
    """The experiment registrations' runs go in: the active one, else ``<user>/models``
    (the registry keeps names ``<user>/...`` for that user's experiments)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        return active.info.experiment_id
    user = user or os.environ.get("JUPYTERHUB_USER") or access()["user"]
    name = f"{user}/models"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # made meanwhile (another kernel)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def register(model, name: str, *, description: str = "", tags: dict | None = None,
             metrics: dict | None = None, sample_input=None, progress: Progress | None = None,
             lineage: dict[str, str] | None = None, training_run_id: str | None = None,
             private: bool | None = None, client=None) -> Registered:
    """Register ``model`` as a new version of ``name`` (see the module's docstring).

    ``private=True`` makes a new model private (only its owner and admins see it) as
    soon as it exists, before its first version; ``False`` makes it readable by every
    signed-in user; None leaves an existing model as it is.

    ``lineage`` defaults to ``lineage.lineage()`` of this kernel (with the Ray job of a
    connected kernel, and ``training_run_id`` when the model came from a training run);
    ``tags`` are the user's own, set on the version alongside it; ``metrics`` are logged
    on the version's run.
    """
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus, Metric, RunStatus
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    name = check_name(name)
    tags, metrics = check_tags(tags), check_metrics(metrics)
    description = check_description(description)
    flavor = detect_flavor(model)
    model_signature = signature(model, flavor, sample_input)
    if lineage is None:
        lineage = lineage_tags(ray_job_id=current_ray_job(), training_run_id=training_run_id)
    version_tags = {**check_tags(lineage), "redspot.flavor": flavor, **tags}
    tracking = tracking_uri()
    client = client or MlflowClient(tracking_uri=tracking)

    def step(what: str):  # a stage of the registration, without byte counts
        if progress:
            progress(0, 0, what)

    _check_may_add_version(name)

    step("starting a run")
    experiment = experiment_id(client, lineage.get("redspot.user"))
    run = client.create_run(experiment, run_name=f"register {name}",
                            tags={**lineage, "redspot.registers": name})
    run_id = run.info.run_id
    logged = None
    uploader = Transfer(tracking, progress)
    created_model = False
    try:
        logged = client.create_logged_model(experiment, name=_logged_name(name),
                                            # the user's tags may outgrow its limits
                                            source_run_id=run_id, tags={
                                                **lineage, "redspot.flavor": flavor},
                                            model_type=flavor)
        now = int(time.time() * 1000)
        if metrics:
            client.log_batch(run_id, metrics=[
                Metric(k, v, now, 0, model_id=logged.model_id) for k, v in metrics.items()])
        step("saving the model")
        with tempfile.TemporaryDirectory(prefix="redspot-model-",
                                         dir=scratch_dir(model_bytes(model, flavor))) as tmp:
            folder = Path(tmp) / "model"
            mlflow_model = Model(artifact_path=logged.artifact_location, run_id=run_id,
                                 model_uuid=logged.model_id, model_id=logged.model_id)
            save(model, flavor, folder, mlflow_model, model_signature)
            for cache in folder.rglob("__pycache__"):  # left by a reload when saving
                shutil.rmtree(cache, ignore_errors=True)
            uploader.upload(folder, logged.artifact_location)
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        step("registering the version")
        try:
            client.create_registered_model(name, description=description or None)
            created_model = True
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if private is not None:
            set_access(name, private=private)
        version = client.create_model_version(
            name, f"models:/{logged.model_id}", run_id=run_id, tags=version_tags,
            description=description or None, model_id=logged.model_id)
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except BaseException as e:
        _undo(client, uploader, run_id, logged, name if created_model else None)
        if isinstance(e, (KeyboardInterrupt, InvalidInput, RegistrationError)):
            raise
        message = getattr(e, "message", None) or str(e)
        raise RegistrationError(f"registering {name!r} failed, nothing was registered: "
                                f"{message}") from e
    step("done")
    return Registered(name=name, version=str(version.version), flavor=flavor,
                      model_id=logged.model_id, run_id=run_id,
                      url=ui_url(name, str(version.version)), tags=version_tags)


def _check_may_add_version(name: str) -> None:
    """Refuse before uploading when the model exists and is someone else's to change."""
    try:
        models = access()["models"]
    except (RegistrationError, OSError, ValueError, KeyError):
        return  # a registry without Redspot's listing: its own answer comes at the end
    for model in models:
        if model["name"] == name and not model.get("may_change", True):
            granted = f", members of {', '.join(model['groups'])}" if model["groups"] else ""
            raise InvalidInput(
                f"the model {name!r} belongs to {model['owner']}: only they{granted} or an "
                "admin may add versions to it; choose another name")


def _logged_name(name: str) -> str:
    # logged models' names are limited and may not hold everything a model name may
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:64] or "model"


def _undo(client, uploader: Transfer, run_id: str, logged, created_model: str | None) -> None:
    """After a failure: nothing of it stays usable (best effort, each step alone)."""
    from mlflow.entities import LoggedModelStatus, RunStatus

    steps = [lambda: client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))]
    if logged is not None:
        steps.insert(0, lambda: client.finalize_logged_model(logged.model_id,
                                                             LoggedModelStatus.FAILED))
        steps.append(lambda: uploader.delete(logged.artifact_location))
    if created_model:
        steps.append(lambda: _delete_if_empty(client, created_model))
    for undo in steps:
        try:
            undo()
        except Exception as e:  # noqa: BLE001 - the first failure is the one to report
            log.warning("cleaning up after a failed registration: %s", e)


def _delete_if_empty(client, name: str) -> None:
    if not client.search_model_versions(f"name = '{_quoted(name)}'", max_results=1):
        client.delete_registered_model(name)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# -- reading ---------------------------------------------------------------------------

def model_names(client=None) -> list[str]:
    """Names of the registered models the user may read (the widget offers them)."""
    from mlflow import MlflowClient

    client = client or MlflowClient(tracking_uri=tracking_uri())
    return sorted(m.name for m in client.search_registered_models(max_results=1000))


def access() -> dict:
    """Who the registry says this user is and every model they may read, with its owner,
    granted groups, privacy and whether they may change it (``app.py``)."""
    import requests

    uploader = Transfer(tracking_uri())
    response = requests.get(f"{uploader.tracking}/redspot/api/permissions",
                            headers=uploader.headers, verify=uploader.verify, timeout=60)
    if response.status_code != 200:
        raise RegistrationError(f"the registry refused to list models: HTTP "
                                f"{response.status_code} {response.text[:300]}")
    return response.json()


def set_access(name: str, *, private: bool | None = None,
               groups: list[str] | None = None) -> dict:
    """Make a model private (or not) and grant hub groups the right to change it: its
    owner's or an admin's call. Returns the model's owner, groups and privacy."""
    import requests

    body = {k: v for k, v in (("private", private), ("groups", groups)) if v is not None}
    uploader = Transfer(tracking_uri())
    response = requests.patch(
        f"{uploader.tracking}/redspot/api/permissions/{quote(name, safe='')}", json=body,
        headers=uploader.headers, verify=uploader.verify, timeout=60)
    if response.status_code != 200:
        raise RegistrationError(_message(response, f"changing who may see {name!r}"))
    return response.json()


def _message(response, what: str) -> str:
    try:
        said = response.json().get("message") or response.text
    except ValueError:
        said = response.text
    return f"{what} was refused: {said[:300]}"


@dataclass
class VersionInfo:
    """A version as the model browser shows it."""

    version: str
    aliases: list[str]
    created: int
    flavor: str | None
    run_id: str | None
    metrics: dict[str, float]
    tags: dict[str, str]


def versions(name: str, client=None) -> list[VersionInfo]:
    """A model's versions, oldest first, with their runs' metrics."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = client or MlflowClient(tracking_uri=tracking_uri())
    found = client.search_model_versions(f"name = '{_quoted(name)}'", max_results=1000)
    aliases: dict[str, list[str]] = {}  # searches leave aliases out; the model has them
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    infos = []
    for v in sorted(found, key=lambda v: int(v.version)):
        metrics = {}
        if v.run_id:
            try:
                metrics = dict(client.get_run(v.run_id).data.metrics)
            except MlflowException:
                pass  # the run was deleted
        tags = dict(v.tags or {})
        infos.append(VersionInfo(str(v.version), sorted(aliases.get(str(v.version), [])),
                                 v.creation_timestamp, tags.get("redspot.flavor"), v.run_id,
                                 metrics, tags))
    return infos


def load(name: str, version: str | int, flavor: str | None = None,
         progress: Progress | None = None, client=None):
    """A registered version back in the notebook: the flavor's own object (the module,
    the estimator) when it has one, else a pyfunc model. Its files are streamed to
    ``scratch_dir`` (memory when there is room) and loaded from there."""
    import mlflow.pyfunc
    from mlflow import MlflowClient

    client = client or MlflowClient(tracking_uri=tracking_uri())
    found = client.get_model_version(name, str(version))
    flavor = flavor or (found.tags or {}).get("redspot.flavor")
    location = client.get_model_version_download_uri(name, str(version))
    transfer = Transfer(tracking_uri(), progress)
    files = transfer.listing(location)
    size = sum(s or 0 for s in files.values())
    with tempfile.TemporaryDirectory(prefix="redspot-model-", dir=scratch_dir(size)) as tmp:
        transfer.download(location, Path(tmp), files)
        if flavor == "pytorch":
            import mlflow.pytorch

            return mlflow.pytorch.load_model(tmp)
        if flavor == "sklearn":
            import mlflow.sklearn

            return mlflow.sklearn.load_model(tmp)
        return mlflow.pyfunc.load_model(tmp)
