"""What a share costs the storage: applying one to a folder, and the periodic check that
applies every share again (``services.sharing.check_interval``).

    python bench/sharing.py [--files 1000,10000] [--rounds 5]     (as root)

In a data folder of its own, with two real accounts (alice, bob), a folder of ``files``
files (100 per subfolder) in alice's home is

- shared with bob (``apply_share``: the helper walks it without following a link and
  writes an ACL entry per file, and a default entry per folder),
- checked again with nothing to put back (what the service does every minute per share),
- against the baseline: a walk of the same tree that opens and ``fstat``s every entry
  without following links, the least any check of each file must do; and ``setfacl -R``
  where the ``acl`` package is installed.

Each figure is the median of ``--rounds``. Target: the check <= 3x the bare walk.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redspot.privileged.ops import Helper  # noqa: E402

PREFIX = "rsb-"


def make_tree(root: Path, files: int, uid: int, gid: int) -> None:
    for i in range(files):
        folder = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            folder.mkdir(mode=0o770)
            os.chown(folder, uid, gid)
        path = folder / f"f{i:06d}.txt"
        path.write_bytes(b"x" * 64)
        os.chown(path, uid, gid)
        os.chmod(path, 0o660)


def bare_walk(root: Path) -> int:
    """Open and fstat every entry, following no link (the floor of any check)."""
    count = 0
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

    def walk(fd: int) -> None:
        nonlocal count
        with os.scandir(fd) as entries:
            names = [e.name for e in entries]
        for name in names:
            child = os.open(name, flags, dir_fd=fd)
            try:
                count += 1
                if stat.S_ISDIR(os.fstat(child).st_mode):
                    walk(child)
            finally:
                os.close(child)

    top = os.open(root, flags | os.O_DIRECTORY)
    try:
        walk(top)
    finally:
        os.close(top)
    return count


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/sharing.py: needs root (it makes two accounts and sets ACLs as the "
              "privileged helper does); skipped", file=sys.stderr)
        return
    data = Path(tempfile.mkdtemp(prefix="rs-share-bench-", dir="/tmp"))
    data.chmod(0o711)
    helper = Helper(data, prefix=PREFIX)
    setfacl = shutil.which("setfacl")
    rows = []
    try:
        for user in ("alice", "bob"):
            helper.ensure_user(user)
        alice = pwd.getpwnam(f"{PREFIX}alice")
        bob_uid = pwd.getpwnam(f"{PREFIX}bob").pw_uid
        for files in (int(n) for n in args.files.split(",")):
            tree = data / "home" / "alice" / f"tree{files}"
            tree.mkdir(mode=0o770)
            os.chown(tree, alice.pw_uid, alice.pw_gid)
            make_tree(tree, files, alice.pw_uid, alice.pw_gid)
            walk, share, check, revoke, native = [], [], [], [], []
            for _ in range(args.rounds):
                walk.append(timed(lambda t=tree: bare_walk(t)))
                share.append(timed(lambda t=tree: helper.apply_share(
                    "alice", t.name, {"user": "bob"})))
                check.append(timed(lambda t=tree: helper.apply_share(
                    "alice", t.name, {"user": "bob"})))
                revoke.append(timed(lambda t=tree: helper.revoke_share(
                    "alice", t.name, {"user": "bob"}, [])))
                if setfacl:
                    native.append(timed(lambda t=tree: subprocess.run(
                        [setfacl, "-R", "-P", "-m", f"u:{bob_uid}:rX", str(t)], check=True)))
            base = statistics.median(walk)
            for name, values in (("share (apply_share)", share),
                                 ("check, nothing to put back", check),
                                 ("revoke (revoke_share)", revoke),
                                 ("setfacl -R (acl package)", native)):
                if values:
                    rows.append((files, name, statistics.median(values), base))
    finally:
        for user in ("alice", "bob"):
            subprocess.run(["userdel", f"{PREFIX}{user}"], capture_output=True)
        subprocess.run(["groupdel", f"{PREFIX}grp_public"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
    print(f"\nSharing a folder: median of {args.rounds}, ms; baseline: opening and "
          "fstat-ing every entry without following links\n")
    print("| files | operation | ms | baseline ms | ratio | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for files, name, value, base in rows:
        ratio = value / base
        target = ""
        if name.startswith("check"):
            target = f"<= 3: {'met' if ratio <= 3 else 'NOT met'}"
        print(f"| {files} | {name} | {value:.1f} | {base:.1f} | {ratio:.2f} | {target} |")


if __name__ == "__main__":
    main()
