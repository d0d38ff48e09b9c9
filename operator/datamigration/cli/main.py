"""`kubectl-datamigration`: the command line for people who run DataMigrations.

Installed as the console script `kubectl-datamigration`, so kubectl finds it as the plugin
`kubectl datamigration ...`. This module only parses arguments, picks the target cluster and
namespace, dispatches to `commands` (cluster verbs) or `offline`/`plan` (lint, plan), and turns
every failure into one `error: ...` line and an exit code: 0 ok, 1 failure (not found, refused,
a manifest that is invalid, unreadable, too large or too deep, lint errors, unreachable cluster),
2 usage. A person never sees a traceback (set
DATAMIGRATION_CLI_DEBUG=1 to get one for a bug report).

Imports of the Kubernetes client happen only for cluster verbs, so `lint` and `plan` start fast
and work on a laptop with no kubeconfig at all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from datamigration.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError

if TYPE_CHECKING:
    from datamigration.cli.connect import Target
    from datamigration.k8s.client import KubeError

PROG = "kubectl datamigration"
OFFLINE = ("lint", "plan")
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    # The global flags work before or after the verb (`-n shop status x`, `status x -n shop`):
    # the verbs' copies default to SUPPRESS so they never overwrite a value given earlier.
    def global_flags(parser: argparse.ArgumentParser, default: object) -> None:
        parser.add_argument(
            "-n",
            "--namespace",
            default=default,
            help="namespace (default: the kubeconfig context's namespace, else default)",
        )
        parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
        parser.add_argument("--context", default=default, help="the kubeconfig context to use")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Drive DataMigrations: expand, backfill, code-rollout, contract.",
        epilog="Exit codes: 0 ok, 1 failure (not found, refused, lint errors), 2 usage.",
    )
    global_flags(parser, None)
    shared = argparse.ArgumentParser(add_help=False)
    global_flags(shared, argparse.SUPPRESS)
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    def verb(name: str, help_: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_, description=help_, parents=[shared])

    sub = verb("list", "list DataMigrations with phase, progress and reason")
    sub.add_argument("-A", "--all-namespaces", action="store_true", help="across all namespaces")

    sub = verb("status", "show one DataMigration: phases, progress, rollout, conditions, Events")
    sub.add_argument("name")
    sub.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="re-render until Succeeded, Failed, Aborted or Invalid (exit 1 unless Succeeded)",
    )
    sub.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default 2)",
    )

    verb("approve", "approve the contract (spec.contract.approved: true)").add_argument("name")
    verb("pause", "pause before the next batch or phase (spec.paused: true)").add_argument("name")
    verb("resume", "resume a paused DataMigration (spec.paused: false)").add_argument("name")
    sub = verb("abort", "stop for good before contract (spec.abort: true)")
    sub.add_argument("name")
    sub.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    verb("retry", "re-run the failed phase (annotation datamigration.dev/retry)").add_argument(
        "name"
    )

    sub = verb(
        "lint",
        "check DataMigration manifests offline: the CRD's schema and rules, the spec, the SQL",
    )
    sub.add_argument("files", nargs="+", metavar="FILE")
    sub = verb("plan", "show what the operator would do with a manifest, offline")
    sub.add_argument("file", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script passes it to sys.exit)."""
    out, err = sys.stdout, sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.verb in OFFLINE:
            return _offline(args, out, err)
        return _online(args, out, err)
    except CliError as exc:
        _fail(err, exc)
        return exc.code
    except KeyboardInterrupt:
        err.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader is gone, nothing left to say
        # ...and keep the interpreter's final flush of stdout from complaining about it.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("DATAMIGRATION_CLI_DEBUG"):
            raise
        from datamigration.cli.connect import first_line

        err.write(
            f"error: internal error ({type(exc).__name__}: {first_line(exc)}); rerun with "
            "DATAMIGRATION_CLI_DEBUG=1 for details\n"
        )
        return EXIT_FAILURE


def _fail(err: TextIO, exc: CliError) -> None:
    err.write(f"error: {exc.message}\n")
    for hint in exc.hints:
        err.write(f"hint: {hint}\n")


def _offline(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.verb == "plan":
        from datamigration.cli.plan import plan_file

        plan = plan_file(args.file)
        out.write(plan.text + "\n")
        return EXIT_OK if plan.ok else EXIT_FAILURE
    from datamigration.cli.offline import lint_paths

    return lint_paths(args.files, out, err)


def _online(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import urllib3

    from datamigration.cli import commands, connect
    from datamigration.k8s.client import KubeError

    target = connect.resolve(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        env=os.environ,
    )
    api = connect.connect(target)
    ns = target.namespace
    try:
        if args.verb == "list":
            return commands.list_migrations(
                api, ns, all_namespaces=args.all_namespaces, out=out, err=err
            )
        if args.verb == "status":
            if args.interval <= 0:
                raise CliError("--interval must be a positive number of seconds", code=EXIT_USAGE)
            return commands.status(
                api,
                ns,
                args.name,
                out=out,
                watch=args.watch,
                interval=args.interval,
                clear=args.watch and out.isatty(),
            )
        if args.verb == "approve":
            return commands.approve(api, ns, args.name, out=out)
        if args.verb == "pause":
            return commands.pause(api, ns, args.name, out=out)
        if args.verb == "resume":
            return commands.resume(api, ns, args.name, out=out)
        if args.verb == "abort":
            confirm: Callable[[str], bool] | None = None
            if args.yes:
                confirm = _yes
            elif sys.stdin.isatty():
                confirm = _ask(out)
            return commands.abort(api, ns, args.name, out=out, confirm=confirm)
        if args.verb == "retry":
            return commands.retry(api, ns, args.name, out=out)
    except KubeError as exc:
        raise _api_error(exc, target) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise connect.unreachable(target, exc) from None
    raise CliError(f"unknown command {args.verb}", code=EXIT_USAGE)


def _yes(question: str) -> bool:
    del question
    return True


def _ask(out: TextIO) -> Callable[[str], bool]:
    def ask(question: str) -> bool:
        out.write(question)
        out.flush()
        try:
            answer = input()
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    return ask


def _api_error(exc: KubeError, target: Target) -> CliError:
    """A `KubeError` as one line: the API's own message, which never carries credentials."""
    if exc.status == 0:  # the client's wrapping of a transport failure (TLS)
        from datamigration.cli.connect import unreachable

        return unreachable(target, exc)
    if exc.status == 401:
        return CliError(
            f"{target.where} rejected the credentials (401 Unauthorized)",
            "refresh your login or choose another --context",
        )
    if exc.status == 403:
        return CliError(f"forbidden: {exc.message or exc.reason}")
    return CliError(f"{exc.reason or exc.status}: {exc.message or 'the API server refused'}")
