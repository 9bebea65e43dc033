"""The user's files, plus Redspot's example notebooks as a read-only ``examples`` folder.

``RedspotContentsManager`` is jupyter-server's own file manager for the user's home,
with one folder added at its top: ``examples``, the notebooks Redspot ships
(``redspot.resources.examples_dir``), always those of the installed Redspot. Nothing is
written into the user's home for it: the folder is served from where Redspot is
installed, and every change to it (save, rename, delete, a new file) is refused with
what to do instead. Copying out of it works as usual (JupyterLab's *Save As*, *Copy*
and *Paste*, *Duplicate* into the home).

A user who has a file or folder of their own named ``examples`` keeps it: the examples
are then not shown.
"""

from __future__ import annotations

import mimetypes
import os
from datetime import UTC, datetime
from pathlib import Path

import nbformat
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from jupyter_server.services.contents.manager import AsyncContentsManager
from tornado import web
from traitlets import Unicode, default

READ_ONLY = ("{path} is one of Redspot's examples, which are read-only (Redspot keeps them "
             "current): save a copy in your home instead (File → Save Notebook As…, or "
             "Copy and Paste it into a folder of yours)")


class RedspotContentsManager(AsyncLargeFileManager):
    examples_dir = Unicode(
        config=True,
        help="""The example notebooks shown read-only as the ``examples`` folder.
        Default: those Redspot ships (``redspot.resources.examples_dir``); empty: none.""",
    )
    examples_folder = Unicode(
        "examples", config=True,
        help="The name of the examples folder at the top of the user's files.",
    )

    @default("examples_dir")
    def _examples_dir_default(self):
        from ..resources import examples_dir

        found = examples_dir()
        return str(found) if found else ""

    # --- which paths are the examples' ------------------------------------------------

    def _shown(self) -> bool:
        """The examples are shown unless there are none, or the home has that name."""
        if not self.examples_dir or not os.path.isdir(self.examples_dir):
            return False
        return not os.path.lexists(os.path.join(self.root_dir, self.examples_folder))

    def _example(self, path: str) -> Path | None:
        """The file of ``path`` when it is in the examples folder (None otherwise)."""
        path = path.strip("/")
        top, _, rest = path.partition("/")
        if top != self.examples_folder or not self._shown():
            return None
        root = Path(self.examples_dir).resolve()
        target = (root / rest).resolve() if rest else root
        if target != root and root not in target.parents:
            raise web.HTTPError(404, f"no such file in the examples: {path}")
        return target

    def _refuse_in_examples(self, *paths: str) -> None:
        for path in paths:
            if path is not None and self._example(path) is not None:
                raise web.HTTPError(403, READ_ONLY.format(path=path.strip("/")))

    # --- reading ----------------------------------------------------------------------

    async def get(self, path, content=True, type=None, format=None, **kwargs):
        target = self._example(path)
        if target is None:
            model = await super().get(path, content=content, type=type, format=format,
                                      **kwargs)
            if path.strip("/") == "" and content and self._shown() and \
                    model.get("type") == "directory":
                model["content"].append(self._model(self.examples_folder,
                                                    Path(self.examples_dir), False))
            return model
        if not target.exists() or self.should_hide(target.name):
            raise web.HTTPError(404, f"no such file in the examples: {path.strip('/')}")
        if type == "directory" and not target.is_dir():
            raise web.HTTPError(400, f"{path} is not a directory")
        model = self._model(path.strip("/"), target, content, format)
        if kwargs.get("require_hash") and model["type"] != "directory":
            model.update(self._get_hash(target.read_bytes()))
        return model

    def should_hide(self, name: str) -> bool:
        return name.startswith(".") or name == "__pycache__"

    def _model(self, path: str, target: Path, content: bool, format=None) -> dict:
        stat = target.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
        model = {"name": path.rsplit("/", 1)[-1], "path": path, "writable": False,
                 "created": modified, "last_modified": modified, "mimetype": None,
                 "content": None, "format": None, "size": None, "hash": None,
                 "hash_algorithm": None}
        if target.is_dir():
            model["type"] = "directory"
            if content:
                model["format"] = "json"
                model["content"] = [
                    self._model(f"{path}/{child.name}", child, False)
                    for child in sorted(target.iterdir()) if not self.should_hide(child.name)]
            return model
        model["size"] = stat.st_size
        if target.suffix == ".ipynb" and format != "text" and format != "base64":
            model["type"] = "notebook"
            if content:
                notebook = nbformat.read(str(target), as_version=4)
                self.mark_trusted_cells(notebook, path)
                model["content"] = notebook
                model["format"] = "json"
                self.validate_notebook_model(model)
            return model
        model["type"] = "file"
        model["mimetype"] = mimetypes.guess_type(target.name)[0] or "text/plain"
        if content:
            raw = target.read_bytes()
            if format == "base64":
                import base64

                model["content"], model["format"] = base64.b64encode(raw).decode(), "base64"
            else:
                try:
                    model["content"], model["format"] = raw.decode("utf-8"), "text"
                except UnicodeDecodeError:
                    raise web.HTTPError(400, f"{path} is not UTF-8 text") from None
        return model

    async def file_exists(self, path=""):
        target = self._example(path)
        return await super().file_exists(path) if target is None else target.is_file()

    async def dir_exists(self, path):
        target = self._example(path)
        return await super().dir_exists(path) if target is None else target.is_dir()

    async def is_hidden(self, path):
        target = self._example(path)
        return await super().is_hidden(path) if target is None else False

    def exists(self, path):  # synchronous in jupyter-server's file managers
        target = self._example(path)
        return super().exists(path) if target is None else target.exists()

    async def list_checkpoints(self, path):
        return [] if self._example(path) is not None else await super().list_checkpoints(path)

    # --- changing: never in the examples ----------------------------------------------

    async def save(self, model, path=""):
        self._refuse_in_examples(path)
        return await super().save(model, path)

    async def delete_file(self, path):
        self._refuse_in_examples(path)
        return await super().delete_file(path)

    async def rename_file(self, old_path, new_path):
        self._refuse_in_examples(old_path, new_path)
        return await super().rename_file(old_path, new_path)

    async def new_untitled(self, path="", type="", ext=""):
        self._refuse_in_examples(path)
        return await super().new_untitled(path=path, type=type, ext=ext)

    async def create_checkpoint(self, path):
        self._refuse_in_examples(path)
        return await super().create_checkpoint(path)

    async def copy(self, from_path, to_path=None):
        """A copy of an example lands in the home, or the home's folder given, under the
        example's name where it is free (else ``<name>-Copy1.ipynb``): "Duplicate" in
        the examples folder puts it at the top of the home."""
        if self._example(from_path) is None:
            if to_path is not None:
                self._refuse_in_examples(to_path)
            return await super().copy(from_path, to_path)
        if to_path is None or self._example(to_path) is not None:
            to_path = ""
        # jupyter-server's copy of one file: self.get (an example) and self.save (home)
        return await AsyncContentsManager.copy(self, from_path=from_path, to_path=to_path)
