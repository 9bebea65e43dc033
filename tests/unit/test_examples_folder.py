"""The read-only ``examples`` folder of every user's files (``RedspotContentsManager``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat
import pytest
from tornado import web

from redspot.resources import examples_dir
from redspot.serverextension.contents import RedspotContentsManager


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def manager(tmp_path):
    home, examples = tmp_path / "home", tmp_path / "examples"
    home.mkdir()
    examples.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]),
                   str(examples / "01-first.ipynb"))
    (examples / "notes.txt").write_text("read me")
    (tmp_path / "secret.txt").write_text("not an example")
    return RedspotContentsManager(root_dir=str(home), examples_dir=str(examples))


def test_the_examples_are_listed_at_the_top_and_read_only(manager):
    top = run(manager.get(""))
    folder = next(m for m in top["content"] if m["name"] == "examples")
    assert folder["type"] == "directory" and folder["writable"] is False
    listing = run(manager.get("examples"))
    assert [m["name"] for m in listing["content"]] == ["01-first.ipynb", "notes.txt"]
    notebook = run(manager.get("examples/01-first.ipynb"))
    assert notebook["type"] == "notebook" and notebook["writable"] is False
    assert notebook["content"].cells[0].source == "1 + 1"
    assert run(manager.get("examples/notes.txt"))["content"] == "read me"
    # JupyterLab asks for the file's hash (to tell whether it changed on disk)
    hashed = run(manager.get("examples/01-first.ipynb", require_hash=True))
    assert hashed["hash_algorithm"] == "sha256" and len(hashed["hash"]) == 64
    assert run(manager.file_exists("examples/notes.txt"))
    assert run(manager.dir_exists("examples"))


@pytest.mark.parametrize("change", [
    lambda m: m.save({"type": "file", "format": "text", "content": "x"}, "examples/new.txt"),
    lambda m: m.save({"type": "file", "format": "text", "content": "x"}, "examples/notes.txt"),
    lambda m: m.delete_file("examples/notes.txt"),
    lambda m: m.rename_file("examples/notes.txt", "stolen.txt"),
    lambda m: m.rename_file("mine.txt", "examples/mine.txt"),
    lambda m: m.new_untitled("examples", type="notebook"),
])
def test_nothing_changes_the_examples(manager, change):
    (Path(manager.root_dir) / "mine.txt").write_text("mine")
    with pytest.raises(web.HTTPError) as e:
        run(change(manager))
    assert e.value.status_code == 403 and "save a copy in your home" in e.value.log_message
    assert (Path(manager.examples_dir) / "notes.txt").read_text() == "read me"


def test_a_copy_lands_in_the_home_and_is_the_users(manager, tmp_path):
    # the copy keeps the example's name where it is free
    copy = run(manager.copy("examples/01-first.ipynb"))  # "Duplicate"
    assert copy["path"] == "01-first.ipynb" and copy["writable"] is True
    assert (tmp_path / "home" / "01-first.ipynb").exists()
    again = run(manager.copy("examples/01-first.ipynb"))  # the first copy is kept
    assert again["path"] == "01-first-Copy1.ipynb"
    run(manager.new_untitled("", type="directory"))
    copy = run(manager.copy("examples/01-first.ipynb", "Untitled Folder"))  # paste
    assert copy["path"] == "Untitled Folder/01-first.ipynb"
    run(manager.save(run(manager.get(copy["path"])), copy["path"]))  # theirs to change


def test_nothing_outside_the_examples_is_reached_through_them(manager):
    for path in ("examples/../secret.txt", "examples/../../etc/passwd"):
        with pytest.raises(web.HTTPError) as e:
            run(manager.get(path))
        assert e.value.status_code == 404


def test_a_users_own_examples_folder_wins(manager, tmp_path):
    (tmp_path / "home" / "examples").mkdir()
    (tmp_path / "home" / "examples" / "mine.py").write_text("")
    names = [m["name"] for m in run(manager.get("examples"))["content"]]
    assert names == ["mine.py"]
    assert [m["name"] for m in run(manager.get(""))["content"]].count("examples") == 1


def test_redspot_ships_its_three_example_notebooks():
    shipped = sorted(p.name for p in examples_dir().glob("*.ipynb"))
    assert shipped == ["01-first-steps.ipynb", "02-train-and-register.ipynb",
                       "03-environments.ipynb"]
    for name in shipped:  # without outputs: they are run by each user
        notebook = nbformat.read(str(examples_dir() / name), as_version=4)
        nbformat.validate(notebook)
        assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
