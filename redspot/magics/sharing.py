"""``%share``, ``%shares``, ``%unshare`` and ``%copy_shared``: sharing with teammates.

Two kinds (docs/sharing.md):

- a read-only share of a file or folder of your home with a user or a group, enforced by
  the storage; recipients find it in ``~/shared-with-me/<you>/...``;
- an invitation into your running server (``--server``): the guest works in your server,
  and **runs code as you**, with your files and credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..sharing.client import (
    HubShares,
    SharingClient,
    SharingError,
    copy_to_home,
    sync_links,
)

GUEST_WARNING = ("A guest in your server runs code as you: they can read and change all "
                 "your files and use your credentials. Invite only whom you would give "
                 "your laptop to, and revoke with %unshare --server --with NAME.")


def _home() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser()


def home_relative(path: str, home: Path | None = None, cwd: str | None = None) -> str:
    """``path`` (relative to the kernel's folder, or absolute) as a path in the home,
    without resolving links (the service refuses a link itself, with a reason)."""
    home = home or _home()
    full = os.path.normpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(path)))
    rel = os.path.relpath(full, home)
    if rel == "." or rel.startswith(".."):
        raise UsageError(f"{path}: not a file or folder inside your home ({home})")
    return rel


def _absolute(url: str) -> str:
    """The hub's link as a browser opens it (the hub gives a path)."""
    if url.startswith("/"):
        public = os.environ.get("JUPYTERHUB_PUBLIC_HUB_URL") or os.environ.get(
            "JUPYTERHUB_PUBLIC_URL", "")
        if public:
            from urllib.parse import urlparse

            parsed = urlparse(public)
            return f"{parsed.scheme}://{parsed.netloc}{url}"
    return url


def _client() -> SharingClient:
    client = SharingClient.from_environment()
    if client is None:
        raise UsageError("the sharing service is not on in this Redspot "
                         "(services.sharing.enabled), or this is not a Redspot server")
    return client


def _hub() -> HubShares:
    hub = HubShares.from_environment()
    if hub is None:
        raise UsageError("not in a JupyterHub server: there is no server to invite into")
    return hub


def _run(call):
    try:
        return call()
    except SharingError as e:
        if e.status == 403 and "shares" in str(e):
            raise UsageError(f"{e} (inviting others into your server is for the groups "
                             "that services.sharing.invite_groups names)") from None
        raise UsageError(str(e)) from None


@magics_class
class SharingMagics(Magics):
    @magic_arguments()
    @argument("path", nargs="?", help="a file or folder of your home")
    @argument("--with", dest="grantees", action="append", default=[], metavar="WHO",
              help="a user (bob) or a group (group:vision); repeat for more")
    @argument("--server", action="store_true",
              help="invite WHO into your running server instead (they run code as you)")
    @argument("--code", action="store_true",
              help="with --server: a link that lets whoever opens it in (until it expires)")
    @argument("--expires", type=int, default=86400,
              help="with --code: seconds until the link expires (60 or more; default a day)")
    @line_magic
    def share(self, line=""):
        """Share a file or folder of your home read-only, or invite someone into your
        server.

        Examples::

            %share notebooks/plan.ipynb --with bob
            %share data/ --with group:vision
            %share --server --with bob
        """
        args = parse_argstring(self.share, line)
        if args.server:
            hub = _hub()
            print(GUEST_WARNING)
            if args.code:
                if args.expires < 60:
                    raise UsageError("--expires: at least 60 seconds")
                code = _run(lambda: hub.code(args.expires))
                link = _absolute(code["accept_url"])
                print(f"Anyone signed in who opens this link joins your server until "
                      f"{code['expires_at']}:\n  {link}")
                return link
            if not args.grantees:
                raise UsageError("--server: say whom with --with NAME (or --code for a link)")
            for who in args.grantees:
                share = _run(lambda who=who: hub.invite(who))
                print(f"Invited {who} into your server: {share['server']['url']}")
            return None
        if not args.path:
            raise UsageError("%share PATH --with WHO (a user, or group:NAME)")
        if not args.grantees:
            raise UsageError("--with: whom to share with (a user, or group:NAME)")
        path = home_relative(args.path)
        client = _client()
        for who in args.grantees:
            share = _run(lambda who=who: client.share(path, who))
            print(f"Shared {share['path']} ({share['kind']}) read-only with {share['with']}: "
                  f"they find it in ~/{share['shared_as']}")
        return None

    @magic_arguments()
    @argument("path", nargs="?", help="a file or folder you shared")
    @argument("--with", dest="grantees", action="append", default=[], metavar="WHO",
              help="only this user or group:NAME (default: everyone it is shared with)")
    @argument("--server", action="store_true", help="take back invitations into your server")
    @line_magic
    def unshare(self, line=""):
        """Revoke shares of a file or folder (on one machine at once), or invitations
        into your server.

        Examples::

            %unshare notebooks/plan.ipynb
            %unshare data/ --with group:vision
            %unshare --server --with bob
        """
        args = parse_argstring(self.unshare, line)
        if args.server:
            hub = _hub()
            if not args.grantees:
                raise UsageError("--server: say whom with --with NAME")
            for who in args.grantees:
                _run(lambda who=who: hub.uninvite(who))
                print(f"{who} may no longer enter your server (within the server's token "
                      "cache time, 30 s by default)")
            return None
        if not args.path:
            raise UsageError("%unshare PATH [--with WHO]")
        path = home_relative(args.path)
        client = _client()
        mine = _run(client.list)["mine"]
        found = [s for s in mine if s["path"] == path
                 and (not args.grantees or s["with"] in args.grantees)]
        if not found:
            raise UsageError(f"{path} is not shared{' with ' + ', '.join(args.grantees) if args.grantees else ''}; "  # noqa: E501
                             f"%shares lists your shares")
        for share in found:
            _run(lambda share=share: client.revoke(share["id"]))
            print(f"Revoked {share['path']} for {share['with']}")
        return None

    @line_magic
    def shares(self, line=""):
        """List your shares, those shared with you (linked in ~/shared-with-me), and who
        may enter your server.

        Example::

            %shares
        """
        client = _client()
        listed = _run(client.list)
        sync_links(_home(), listed["with_me"])
        print("Shared by you:" if listed["mine"] else "Shared by you: nothing")
        for s in listed["mine"]:
            print(f"  {s['path']:<40} with {s['with']}")
        print("Shared with you:" if listed["with_me"] else "Shared with you: nothing")
        for s in listed["with_me"]:
            print(f"  ~/{s['shared_as']:<40} by {s['owner']} (read-only)")
        hub = HubShares.from_environment()
        if hub is not None:
            try:
                invited = hub.list()
            except SharingError:
                invited = None  # this user may not invite: nothing to list
            if invited:
                names = [i["user"]["name"] if i["user"] else f"group:{i['group']['name']}"
                         for i in invited]
                print(f"Invited into your server: {', '.join(names)}")
        return None

    @magic_arguments()
    @argument("source", help="a file or folder in ~/shared-with-me")
    @argument("dest", nargs="?", help="where in your home (default: its name, at the top)")
    @line_magic
    def copy_shared(self, line=""):
        """Copy a file or folder shared with you into your home, to change it.

        Example::

            %copy_shared shared-with-me/alice/plan.ipynb my-plan.ipynb
        """
        args = parse_argstring(self.copy_shared, line)
        home = _home()
        source = os.path.relpath(os.path.abspath(os.path.expanduser(args.source)), home)
        try:
            copied = copy_to_home(home, source, args.dest)
        except (SharingError, OSError) as e:
            raise UsageError(str(e)) from None
        print(f"Copied to {copied.relative_to(home)}: this copy is yours")
        return str(copied)
