"""The ``redspot`` command.

    redspot up [--ip IP] [--port PORT] [--data-dir DIR] [--config FILE] [--keep-servers]
    redspot config check|show|schema [--config FILE] [--data-dir DIR]
    redspot users list|add|approve|passwd|remove|restore [NAME] [--data-dir DIR]
    redspot usage [--since 30d] [--until now] [--by user|group|profile] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__

#: ``redspot users`` actions and what each does.
USER_ACTIONS = {
    "list": "list the accounts, those awaiting approval or a password, and removed users",
    "add": "add an account; prints its generated password and where to sign in",
    "approve": "let an account that signed up (auth.signup: approval) sign in",
    "passwd": "set a new password (generated and printed, or --password-stdin)",
    "remove": "stop the user's server, revoke their tokens and sessions, and retire the "
              "name (nobody else may take it)",
    "restore": "bring a removed user back, with their home, models and environments",
}


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data folder (default /var/lib/redspot as root, "
                        "~/.local/share/redspot otherwise)")
    parser.add_argument("--config", help="redspot.yaml to use (default <data-dir>/redspot.yaml)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redspot", description="Redspot: JupyterHub for machine-learning teams."
    )
    parser.add_argument("--version", action="version", version=f"redspot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the hub, the proxy and the services")
    _add_location(up)
    up.add_argument("--ip", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="port to listen on (default 8000)")
    up.add_argument("--api-port", type=int, help="port of the hub's own API (default 8081)")
    up.add_argument("--proxy-api-port", type=int, help="port of the proxy's API (default 8001)")
    up.add_argument("--keep-servers", action="store_true",
                    help="when the hub stops, leave the proxy and users' servers running; "
                    "the next `redspot up` reconnects to them")
    up.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    hub = sub.add_parser(
        "hub", help="run the hub in a Kubernetes pod (what the Helm chart runs)",
        description="Run the hub in a Kubernetes pod, as the Helm chart's hub Deployment "
        "does: servers are pods, the proxy runs in its own Deployment, secrets come from "
        "the release's Secret (docs/kubernetes.md). On one machine, use `redspot up`.")
    hub.add_argument("--config", required=True, help="redspot.yaml (the chart's `redspot:`)")
    hub.add_argument("--data-dir", required=True, help="the hub's volume")
    hub.add_argument("--hub-url", required=True,
                     help="how the proxy and servers reach the hub, e.g. http://redspot-hub:8081")
    hub.add_argument("--proxy-api-url", required=True,
                     help="the proxy's REST API, e.g. http://redspot-proxy-api:8001")
    hub.add_argument("--release", default="redspot",
                     help="the Helm release: services are reached at http://RELEASE-NAME:8080")
    hub.add_argument("--show-config", action="store_true",
                     help="print the assembled JupyterHub config and stop")

    service = sub.add_parser(
        "service", help="run one Redspot service in a Kubernetes pod (what the chart runs)",
        description="Run one Redspot service in a pod of its own, with the command and "
        "environment `redspot up` would start it with (docs/kubernetes.md).")
    service.add_argument("name", help="the service, e.g. models")
    service.add_argument("--config", required=True, help="redspot.yaml (the chart's `redspot:`)")
    service.add_argument("--data-dir", required=True,
                         help="the data folder; the service keeps its own in NAME/ of it")
    service.add_argument("--hub-url", required=True,
                         help="how the service reaches the hub, e.g. http://redspot-hub:8081")
    service.add_argument("--release", default="redspot", help="the Helm release")

    config = sub.add_parser("config", help="check or show the configuration")
    config.add_argument("action", choices=["check", "show", "schema"],
                        help="check: validate; show: print the assembled JupyterHub config; "
                        "schema: print the documented schema as Markdown")
    _add_location(config)

    users = sub.add_parser(
        "users", help="manage Redspot's own accounts (password sign-in)",
        description="Manage the accounts of Redspot's password sign-in. Use the same data "
        "folder (--data-dir, or the config's hub.data_dir) as `redspot up`.")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text in USER_ACTIONS.items():
        one = actions.add_parser(action, help=help_text, description=help_text)
        if action != "list":
            one.add_argument("name", metavar="NAME", help="the user's name")
        if action in ("add", "passwd"):
            one.add_argument("--password-stdin", action="store_true",
                             help="read the password from standard input instead of "
                             "generating one (printed once)")
        _add_location(one)
    shares = sub.add_parser(
        "shares", help="list, revoke and check users' shares (admins)",
        description="Users' read-only shares, asked of the running hub's sharing service "
        "(services.sharing.enabled). Use the same data folder as `redspot up`.")
    share_actions = shares.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = share_actions.add_parser("list", help="every share (--owner: one user's), "
                                       "revoked ones too")
    listing.add_argument("--owner", help="only this user's shares")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = share_actions.add_parser("revoke", help="revoke a share by its id")
    revoke.add_argument("id", metavar="ID", help="the share's id (`redspot shares list`)")
    revoke.add_argument("--stop-servers", action="store_true",
                        help="Kubernetes: also stop the recipients' servers now")
    share_actions.add_parser("check", help="apply every share again now, putting back "
                             "what renames and chmods took away")
    for one in share_actions.choices.values():
        _add_location(one)

    smoke = sub.add_parser(
        "smoke", help="check that Redspot works end to end: spawn a server, run a Ray task",
        description="As the user redspot-smoke (made on the first run): start a server, "
        "connect a kernel to the user's Ray cluster, run a Ray task, stop everything, "
        "saying each step with its time. On one machine it uses the running `redspot up` "
        "of the data folder; in a cluster, --hub-url and $REDSPOT_SMOKE_TOKEN (the "
        "chart's `helm test` does this).")
    _add_location(smoke)
    smoke.add_argument("--hub-url", help="where the proxy answers, e.g. "
                       "http://redspot-proxy-public (token: $REDSPOT_SMOKE_TOKEN)")
    smoke.add_argument("--profile", help="the instance profile to start (default: the "
                       "hub's default)")
    smoke.add_argument("--timeout", type=float, default=900,
                       help="seconds the server may take to start (default 900: a new GPU "
                       "node takes minutes)")
    usage = sub.add_parser(
        "usage", help="hours and cost of servers and Ray nodes, per user, group or profile",
        description="A report from Redspot's usage log: the hours each user's servers and "
        "Ray nodes ran in a period, and what they cost at their profiles' prices. Use the "
        "same data folder as `redspot up` (in a cluster: `kubectl exec` into the hub, "
        "which reads $REDSPOT_HUB_DB_URL).")
    _add_location(usage)
    usage.add_argument("--since", default="30d",
                       help="start of the period: a date (2026-11-01), a date and time in "
                       "UTC (2026-11-01T08:00), or a span ago (7d, 12h). Default 30d")
    usage.add_argument("--until", default="now", help="end of the period (default now)")
    usage.add_argument("--by", choices=["user", "group", "profile"], default="user",
                       help="one line per user (default), group or profile")
    usage.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _fail(message: str, code: int = 2):
    print(f"redspot: {message}", file=sys.stderr)
    raise SystemExit(code)


def _cmd_up(args) -> None:
    # importing the hub takes seconds (jsonschema, JupyterHub): say what is happening first
    print("Redspot: checking the configuration, preparing the data folder, accounts and "
          "the privileged helper...", flush=True)
    from .config.layers import CommandLine
    from .hub.app import UpOptions, up

    cli = CommandLine(
        ip=args.ip, port=args.port, api_port=args.api_port, proxy_api_port=args.proxy_api_port,
        keep_servers=args.keep_servers, log_level=args.log_level,
    )
    up(UpOptions(data_dir=args.data_dir, config=args.config, cli=cli))


def _cmd_hub(args) -> None:
    from pathlib import Path

    from .config.loader import ConfigError
    from .hub import incluster

    options = incluster.InCluster(config=Path(args.config), data_dir=Path(args.data_dir),
                                  hub_url=args.hub_url, proxy_api_url=args.proxy_api_url,
                                  release=args.release)
    if args.show_config:
        try:
            c = incluster.build_config(options)
        except ConfigError as e:
            _fail(str(e))
        print(json.dumps(c, indent=2, sort_keys=True, default=str))
        return
    incluster.run(options)


def _cmd_service(args) -> None:
    from pathlib import Path

    from .hub import incluster

    incluster.run_service(args.name, incluster.InCluster(
        config=Path(args.config), data_dir=Path(args.data_dir), hub_url=args.hub_url,
        proxy_api_url="", release=args.release))


def _cmd_config(args) -> None:
    from .config.loader import ConfigError
    from .hub.app import StartupError, UpOptions, build_config, resolve

    if args.action == "schema":
        from .config.docs import schema_markdown

        sys.stdout.write(schema_markdown())
        return
    try:
        paths, settings, config_file = resolve(UpOptions(data_dir=args.data_dir,
                                                         config=args.config))
        if args.action == "check":
            from .config.loader import config_warnings

            print(f"{config_file or 'built-in defaults'}: valid")
            for warning in config_warnings(settings):
                print(f"  warning: {warning}")
            return
        c, *_ = build_config(UpOptions(data_dir=args.data_dir, config=args.config),
                            prepare=False)
    except (ConfigError, StartupError) as e:
        _fail(str(e))
    print(json.dumps(c, indent=2, sort_keys=True, default=str))


def _cmd_users(args) -> None:
    from .config.loader import ConfigError
    from .hub.app import UpOptions, resolve
    from .hub.userstore import UserStore, UserStoreError, generate_password
    from .privileged.ops import HelperError

    try:
        paths, settings, _ = resolve(UpOptions(data_dir=args.data_dir, config=args.config))
    except ConfigError as e:
        _fail(str(e))
    store = UserStore(paths.users_db)
    if args.action == "list":
        for account in store.list():
            if not account.has_password:
                state = f"no password yet (`redspot users passwd {account.name}`)"
            else:
                state = "approved" if account.approved else "awaiting approval"
            print(f"{account.name}\t{state}")
        for name, _ in store.retired():
            print(f"{name}\tremoved (`redspot users restore {name}` brings them back)")
        return
    try:
        if args.action in ("add", "passwd"):
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = generate_password()
            if args.action == "add":
                store.add(args.name, password)
                listed = _list_on_hub(paths, args.name)
            else:
                store.set_password(args.name, password)
            if args.password_stdin:
                print(f"{args.name}: password set")
            else:
                print(f"{args.name}: password {password}   (shown once)")
            if args.action == "add":
                print(_next_step(paths, settings, args.name, listed))
        elif args.action == "approve":
            store.approve(args.name)
        elif args.action == "remove":
            print(_remove_user(paths, settings, store, args.name))
        elif args.action == "restore":
            record = store.restore(args.name)
            try:
                _helper(paths, settings).call("restore_user", user=args.name, record=record)
            except HelperError:
                store.retire(args.name, record)  # as it was
                raise
            print(f"{args.name} is back, with their home; they sign in as before")
    except (UserStoreError, HelperError) as e:
        _fail(str(e))


def _list_on_hub(paths, name: str) -> bool:
    """The running hub lists the new user at once (admin page, REST API); a hub that
    is not running lists them when it starts. Returns whether a hub was reached."""
    import requests

    from .hub.app import cli_access

    access = cli_access(paths)
    if not access:
        return False
    try:
        r = requests.post(f"{access['url']}/users/{name}", timeout=30,
                          headers={"Authorization": f"token {access['token']}"})
    except requests.ConnectionError:
        return False
    return r.status_code in (201, 409)


def _next_step(paths, settings, name: str, listed: bool) -> str:
    from .hub.app import cli_access

    url = (cli_access(paths) or {}).get("public_url") or _configured_url(settings)
    where = ("the running hub lists them now" if listed else
             "the hub lists them from its next start")
    return (f"Next: {name} signs in at {url} ({where}).\n"
            f"This account is in the data folder {paths.root}: `redspot up` must use the "
            "same one (--data-dir, or hub.data_dir in the config).")


def _configured_url(settings) -> str:
    hub = settings.get("hub", {})
    return (f"http://{hub.get('ip', '127.0.0.1')}:{hub.get('port', 8000)}"
            f"{hub.get('base_url', '/')}")


def _helper(paths, settings):
    """The running hub's privileged helper, else the same operations in this process."""
    from .hub.app import account_prefix, isolates_users
    from .privileged.client import helper_for
    from .privileged.ops import HelperError

    if paths.helper_socket.exists():
        helper = helper_for(str(paths.helper_socket), paths.root)
        try:
            helper.call("ping")
            return helper
        except HelperError:
            pass  # a socket left by a hub that is gone
    return helper_for("", paths.root, prefix=account_prefix(settings),
                      isolated=isolates_users(settings))


def _remove_user(paths, settings, store, name: str) -> str:
    """Through the running hub when there is one (it stops the server, drops tokens and
    sessions, and retires the user), else here; the hub removes a user it still lists at
    its next start."""
    import requests

    from .hub.app import cli_access
    from .hub.userstore import UserStoreError

    if store.is_retired(name):
        raise UserStoreError(f"{name!r} was removed already")
    access = cli_access(paths)
    if access:
        try:
            r = requests.delete(f"{access['url']}/users/{name}", timeout=120,
                                headers={"Authorization": f"token {access['token']}"})
        except requests.ConnectionError:
            r = None  # the hub is not running
        if r is not None and r.status_code == 204:
            return f"removed {name}: server stopped, tokens revoked, name retired"
        if r is not None and r.status_code not in (404, 403):
            raise UserStoreError(f"the hub refused to remove {name}: {r.status_code} {r.text}")
    if store.get(name) is None and not _has_traces(paths, name):
        raise UserStoreError(f"no such user: {name!r}")
    record = _helper(paths, settings).call("retire_user", user=name)
    store.retire(name, record)
    return f"removed {name}: name retired"


def _has_traces(paths, name: str) -> bool:
    from .spawner.storage import Layout

    return (paths.root / Layout(name).home).exists()


def _cmd_shares(args) -> None:
    from .config.loader import ConfigError
    from .hub.app import UpOptions, cli_access, resolve
    from .sharing.client import SharingClient, SharingError

    try:
        paths, settings, _ = resolve(UpOptions(data_dir=args.data_dir, config=args.config))
    except ConfigError as e:
        _fail(str(e))
    if not settings.get("services", {}).get("sharing", {}).get("enabled"):
        _fail("the sharing service is off (services.sharing.enabled in the config)")
    access = cli_access(paths)
    if not access:
        _fail(f"no running hub uses the data folder {paths.root}; start `redspot up`")
    client = SharingClient(access["public_url"].rstrip("/") + "/services/sharing/",
                           access["token"])
    try:
        if args.action == "list":
            found = client.list_all(args.owner or "")
            if args.json:
                print(json.dumps(found, indent=2))
                return
            for s in found:
                state = "active" if s["active"] else f"revoked by {s['revoked_by']}"
                print(f"{s['id']}\t{s['owner']}\t{s['path']}\t{s['with']}\t{state}")
        elif args.action == "revoke":
            revoked = client.revoke(args.id, stop_servers=args.stop_servers)
            print(f"revoked {revoked['id']}: {revoked['owner']}'s {revoked['path']} for "
                  f"{revoked['with']}")
            if revoked.get("stopped_servers"):
                print(f"stopped the servers of {', '.join(revoked['stopped_servers'])}")
        else:
            checked = client.check()
            print(f"checked {checked['checked']} shares: put back {len(checked['repaired'])}, "
                  f"{len(checked['missing'])} not found")
            for missing in checked["missing"]:
                print(f"  {missing['id']}: {missing['reason']}")
    except SharingError as e:
        _fail(str(e))


def _cmd_usage(args) -> None:
    from .config.loader import ConfigError
    from .hub.app import UpOptions, resolve
    from .usage import UsageLog, format_report, period, report_dict, summarise

    try:
        since, until = period(args.since, args.until)
    except ValueError as e:
        _fail(f"--since/--until: {e}")
    url = os.environ.get("REDSPOT_HUB_DB_URL")
    if not url:
        try:
            paths, _, _ = resolve(UpOptions(data_dir=args.data_dir, config=args.config))
        except ConfigError as e:
            _fail(str(e))
        if not paths.usage_db.exists():
            _fail(f"{paths.usage_db}: no usage log; nothing has run on this data folder's "
                  "hub yet, or it is another data folder (--data-dir)")
        url = f"sqlite:///{paths.usage_db}"
    log = UsageLog(url)
    try:
        lines = summarise(log.records(since, until), since, until, by=args.by)
    finally:
        log.close()
    if args.json:
        print(json.dumps(report_dict(lines, since, until, args.by), indent=2))
    else:
        print(format_report(lines, since, until, args.by))


def _cmd_smoke(args) -> None:
    from .smoke import Smoke, run

    if args.hub_url:
        token = os.environ.get("REDSPOT_SMOKE_TOKEN")
        if not token:
            _fail("--hub-url: set REDSPOT_SMOKE_TOKEN to the redspot-smoke service's token "
                  "(the chart's Secret, key smoke-token)")
        public = args.hub_url.rstrip("/") + "/"
        api = public + "hub/api"
    else:
        from .config.loader import ConfigError
        from .hub.app import UpOptions, cli_access, resolve

        try:
            paths, _, _ = resolve(UpOptions(data_dir=args.data_dir, config=args.config))
        except ConfigError as e:
            _fail(str(e))
        access = cli_access(paths)
        if not access:
            _fail(f"no running hub uses the data folder {paths.root}; start `redspot up`, "
                  f"or give --hub-url")
        api, public, token = access["url"], access["public_url"], access["token"]
    raise SystemExit(run(Smoke(api, public, token, profile=args.profile,
                               timeout=args.timeout, say=lambda line: print(line, flush=True))))


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    {"up": _cmd_up, "hub": _cmd_hub, "service": _cmd_service, "config": _cmd_config,
     "users": _cmd_users, "shares": _cmd_shares, "usage": _cmd_usage,
     "smoke": _cmd_smoke}[args.command](args)


if __name__ == "__main__":
    main()
