"""Checkpoint storage through fsspec: a path on shared storage, or ``s3://`` (s3fs).

Credentials and endpoints come from the environment as s3fs reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``…).
"""

from __future__ import annotations

from pathlib import Path


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(url: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def upload(files: list[Path], root: Path, url: str) -> None:
    """``files`` (under ``root``) to ``url``, keeping their paths below ``root``."""
    fs, base = filesystem(url)
    for path in files:
        target = join(base, path.relative_to(root).as_posix())
        parent = target.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(path), target)


def download(url: str, folder: Path) -> Path:
    """Everything under ``url`` into ``folder``; ``folder``."""
    fs, base = filesystem(url)
    if not fs.exists(base):
        raise FileNotFoundError(f"nothing at {url}")
    for remote in fs.find(base):
        rel = remote[len(base.rstrip("/")) + 1:]
        local = folder / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    return folder


def read_text(url: str) -> str:
    fs, path = filesystem(url)
    with fs.open(path, "r") as f:
        return f.read()
