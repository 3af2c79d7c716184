"""`etcd-dr server`: the Prefect server, every deployment of every cluster, the concurrency limits,
the alert automations and the Alertmanager receiver, in one command (console.server). It must run
outside the clusters it protects (README "`etcd-dr server`")."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd(args: argparse.Namespace) -> int:
    from console.server import ServerOptions, read_api_auth, read_token, run  # Prefect only here

    token = None if args.no_receiver else read_token(args.alert_token_file)
    opts = ServerOptions(
        inventories=Path(args.inventories).expanduser().absolute(),
        data=Path(args.data).expanduser().absolute(),
        host=args.host,
        port=args.port,
        receiver_port=args.receiver_port,
        token=token,
        receiver=not args.no_receiver,
        alert_names=tuple(args.alert_name),
        alert_label=args.alert_label,
        api_auth=read_api_auth(args.api_auth_file) if args.api_auth_file else None,
        database=args.database,
        work_pool=args.work_pool,
    )
    return run(opts, say=lambda s: print(s, flush=True))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "server",
        help="run the console: Prefect server, every cluster's deployments, the alert receiver",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument(
        "--inventories",
        default="/etc/etcd-dr/clusters",
        help="directory of inventories, one per cluster (default /etc/etcd-dr/clusters)",
    )
    p.add_argument(
        "--data",
        default="/var/lib/etcd-dr/server",
        help="the server's data: Prefect's SQLite database, logs, open incidents "
        "(default /var/lib/etcd-dr/server)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address both ports listen on (default 127.0.0.1: Prefect OSS has no auth of its own)",
    )
    p.add_argument("--port", type=int, default=4200, help="the Prefect server and UI (default 4200)")
    p.add_argument("--receiver-port", type=int, default=9095, help="the alert receiver (default 9095)")
    p.add_argument(
        "--alert-token-file",
        default=None,
        help="file holding the token Alertmanager sends (default: $ETCD_DR_ALERT_TOKEN)",
    )
    p.add_argument(
        "--alert-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another alert name that starts a recovery (repeatable; the etcd mixin's "
        "etcdInsufficientMembers, etcdNoLeader, etcdMembersDown always do)",
    )
    p.add_argument(
        "--alert-label",
        default="cluster",
        help="the alert label naming the cluster, matched against the inventory's `cluster:` "
        "(default cluster)",
    )
    p.add_argument(
        "--api-auth-file",
        default=None,
        metavar="FILE",
        help="file holding `user:password`: the Prefect server then asks for it (HTTP basic "
        "auth; put TLS in front when --host is not loopback)",
    )
    p.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help="the Prefect server's database: postgresql+asyncpg://USER@HOST:PORT/DB (a password in "
        "~/.pgpass rather than in the URL: a command line is visible to every local user; default: "
        "SQLite in --data)",
    )
    p.add_argument(
        "--work-pool",
        default=None,
        metavar="NAME",
        help="register the deployments for this process work pool (made if missing) and run nothing "
        "here: workers on other machines run them (`prefect worker start --pool NAME`, with "
        "$ETCD_DR_HOME and $ETCD_DR_INVENTORIES set); default: this process runs them",
    )
    p.add_argument("--no-receiver", action="store_true", help="no alert receiver (no token needed)")
    p.set_defaults(func=_cmd)
