"""The CLI's verbs on a cluster: list, status, approve, pause, resume, abort, retry.

Why each verb checks before it patches: a person types these during an incident. Approving a
migration whose contract needs no approval, aborting one whose contract already dropped a
column, or retrying one that has not failed would each "succeed" as a patch and do nothing (or
not what was meant). So each verb reads the object, refuses with the reason when the request
makes no sense in its current state (by the rules of `core/rules.py`, the same the operator
applies), patches the one field the operator reads
(`spec.contract.approvedDigest`, `spec.paused`, `spec.abort`, the `datamigration.dev/retry`
annotation), and says what happens next. The operator stays the only actor: nothing here creates
Jobs or writes status.

Every API call goes through `ClusterApi` (here typed as the `MigrationApi` protocol, so tests
can pass a fake).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from datamigration.cli import render
from datamigration.cli.errors import EXIT_FAILURE, EXIT_OK, CliError
from datamigration.core import rules
from datamigration.core.status import Status
from datamigration.k8s.client import KubeError

JSON = dict[str, Any]
RETRY_ANNOTATION = "datamigration.dev/retry"
CRD_NAME = "datamigrations.datamigration.dev"
DEFAULT_WATCH_INTERVAL = 2.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class MigrationApi(Protocol):
    """The part of `ClusterApi` the CLI uses."""

    def get_migration(self, namespace: str, name: str) -> JSON | None: ...

    def list_migrations(self, namespace: str | None = None) -> list[JSON]: ...

    def patch_migration(self, namespace: str, name: str, patch: JSON) -> JSON: ...

    def list_events(self, namespace: str, name: str) -> list[JSON]: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def _crd_missing() -> CliError:
    return CliError(
        f"the DataMigration resource type ({CRD_NAME}) is not installed in this cluster",
        "install the operator's CRD: kubectl apply -f crds/datamigrations.datamigration.dev.yaml",
    )


def not_found(api: MigrationApi, namespace: str, name: str) -> CliError:
    """The not-found error, with the namespaces that do have a migration of that name."""
    try:
        everywhere = api.list_migrations(None)
    except KubeError as exc:
        if exc.not_found:
            return _crd_missing()
        everywhere = []  # e.g. no permission to list across namespaces: no hint, no failure
    elsewhere = sorted(
        {
            str(o.get("metadata", {}).get("namespace"))
            for o in everywhere
            if o.get("metadata", {}).get("name") == name
        }
        - {namespace}
    )
    if elsewhere:
        where = "namespace" if len(elsewhere) == 1 else "namespaces"
        hint = f"it exists in {where} {', '.join(elsewhere)}: add -n {elsewhere[0]}"
    else:
        hint = "list them with: kubectl datamigration list -A"
    return CliError(f'datamigration "{name}" not found in namespace "{namespace}"', hint)


def fetch(api: MigrationApi, namespace: str, name: str) -> JSON:
    obj = api.get_migration(namespace, name)
    if obj is None:
        raise not_found(api, namespace, name)
    return obj


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _say(out: TextIO, *lines: str) -> None:
    for line in lines:
        out.write(line + "\n")


def _ref(name: str, namespace: str) -> str:
    return f"{name} -n {namespace}"


# -- list, status -------------------------------------------------------------------------------
def list_migrations(
    api: MigrationApi,
    namespace: str,
    *,
    all_namespaces: bool,
    out: TextIO,
    err: TextIO,
    now: Callable[[], datetime] = utcnow,
) -> int:
    try:
        items = api.list_migrations(None if all_namespaces else namespace)
    except KubeError as exc:
        if exc.not_found:
            raise _crd_missing() from None
        raise
    if not items:
        where = "any namespace" if all_namespaces else f"{namespace} namespace"
        _say(err, f"No datamigrations found in {where}.")
        return EXIT_OK
    _say(out, render.render_list(items, now(), all_namespaces=all_namespaces))
    return EXIT_OK


def _events(api: MigrationApi, namespace: str, name: str) -> list[JSON]:
    try:
        return api.list_events(namespace, name)
    except KubeError as exc:
        if exc.status in (401, 403):  # Events are optional garnish: no access, no Events
            return []
        raise


def status(
    api: MigrationApi,
    namespace: str,
    name: str,
    *,
    out: TextIO,
    watch: bool = False,
    interval: float = DEFAULT_WATCH_INTERVAL,
    clear: bool = False,
    now: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the status screen; with `watch`, re-render until a terminal phase.

    With `watch`, the exit code says how it ended: 0 Succeeded, 1 Failed/Aborted/Invalid.
    `clear` redraws in place (a terminal); otherwise a screen is printed only when the object
    or its Events changed, so a log stays readable.
    """
    from datamigration.cli.watch import WatchApi, follow_status, screen_writer

    if watch and isinstance(api, WatchApi):  # the real API: follow API watches, no polling
        return follow_status(
            api,
            namespace,
            name,
            draw=screen_writer(out, clear=clear, now=now, clear_screen=CLEAR_SCREEN),
            fetch=lambda: fetch(api, namespace, name),
            events=lambda: _events(api, namespace, name),
        )
    last_key: tuple[object, ...] | None = None
    while True:
        obj = fetch(api, namespace, name)
        events = _events(api, namespace, name)
        text = render.render_status(obj, events, now())
        phase = render.phase_of(obj)
        key = (
            obj.get("metadata", {}).get("resourceVersion"),
            tuple(e.get("metadata", {}).get("resourceVersion") for e in events),
        )
        if not watch:
            _say(out, text)
            return EXIT_OK
        if clear:
            out.write(CLEAR_SCREEN)
            _say(out, text)
        elif key != last_key:
            if last_key is not None:
                _say(out, "", f"--- {now().strftime('%H:%M:%S')} " + "-" * 60)
            _say(out, text)
        out.flush()
        last_key = key
        if phase in render.TERMINAL_PHASES:
            return EXIT_OK if phase == "Succeeded" else EXIT_FAILURE
        sleep(interval)


# -- approve, pause, resume, abort, retry -------------------------------------------------------
#: How often approve re-reads the object when it changed between the read and the write (the
#: runner's progress reports and the operator's status writes change its resourceVersion).
APPROVE_ATTEMPTS = 5


class _Changed(Exception):
    """The object changed between reading its digest and writing the approval."""


def approve(api: MigrationApi, namespace: str, name: str, *, out: TextIO) -> int:
    """Approve exactly the contract the operator shows: its digest (status.contract.digest)
    goes into spec.contract.approvedDigest, so an edit after this approval is not approved.

    The write carries the resourceVersion read with the digest; when the object changed in
    between (often only its status), everything is read and checked again."""
    for _ in range(APPROVE_ATTEMPTS):
        try:
            return _approve_once(api, namespace, name, out=out)
        except _Changed:
            continue
    raise CliError(
        f'datamigration "{name}" kept changing while it was being approved: nothing approved',
        "look at it again, then approve",
    )


def _approve_once(api: MigrationApi, namespace: str, name: str, *, out: TextIO) -> int:
    obj = fetch(api, namespace, name)
    status = obj.get("status") or {}
    phase = render.phase_of(obj)
    if rules.is_terminal(status):
        raise CliError(f'datamigration "{name}" is already {phase}: there is nothing to approve')
    spec = _spec(obj)
    if not rules.has_contract(spec):
        raise CliError(f'datamigration "{name}" has no contract steps: there is nothing to approve')
    contract = spec.get("contract")
    assert isinstance(contract, Mapping)
    if not rules.needs_approval(spec):
        raise CliError(
            f'datamigration "{name}" does not need approval: spec.contract.approval is '
            f"{contract.get('approval')}, so the contract starts by itself once the rollout is "
            "proven" + (" and its verify queries pass" if contract.get("verify") else ""),
            "to require a person's approval, set spec.contract.approval: Manual",
        )
    known = Status.from_dict(status)
    digest = known.contract.digest
    if not digest:
        why = known.contract.message or "the operator has not computed it yet (is it running?)"
        raise CliError(
            f'cannot approve datamigration "{name}" yet: the digest of its contract is not known: '
            f"{why}",
            "an approval names the exact contract it approves; try again once "
            f"`kubectl datamigration status {_ref(name, namespace)}` shows the digest",
        )
    if contract.get("approvedDigest") == digest:
        _say(out, f'datamigration "{name}" is already approved (contract {render.short(digest)})')
        return EXIT_OK
    meta = obj.get("metadata") or {}
    if known.observed_generation != meta.get("generation"):
        raise CliError(
            f'cannot approve datamigration "{name}" yet: its spec changed (generation '
            f"{meta.get('generation')}) and the operator has not computed the new digest "
            f"(status describes generation {known.observed_generation})",
            "try again in a moment",
        )
    patch: JSON = {"spec": {"contract": {"approved": True, "approvedDigest": digest}}}
    if meta.get("resourceVersion"):  # nothing may change between reading the digest and this
        patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    try:
        api.patch_migration(namespace, name, patch)
    except KubeError as exc:
        if exc.conflict:
            raise _Changed from None
        raise
    _say(
        out,
        f'datamigration "{name}" approved: contract {render.short(digest)} '
        f"(spec.contract.approvedDigest: {digest})",
        "Only this contract is approved: an edit of its steps, verify queries or target image "
        "needs a new approval.",
    )
    if phase == "AwaitingApproval":
        nxt = (
            "the operator re-checks that every pod still runs the new code, then starts the "
            "contract Job: verify queries first, then the contract steps"
        )
    else:
        nxt = (
            f"nothing changes now (phase {phase}); the contract will start without waiting for "
            "approval once code-rollout is proven"
        )
    _say(out, f"Next: {nxt}.")
    if _spec(obj).get("paused") is True:
        _say(
            out,
            f"Note: it is paused; resume it first: kubectl datamigration resume "
            f"{_ref(name, namespace)}",
        )
    if phase in ("Failed", "Invalid"):
        _say(out, f"Note: it is {phase}; the approval applies once that is resolved.")
    _say(out, f"Follow it with: kubectl datamigration status {_ref(name, namespace)} --watch")
    return EXIT_OK


def pause(api: MigrationApi, namespace: str, name: str, *, out: TextIO) -> int:
    obj = fetch(api, namespace, name)
    phase = render.phase_of(obj)
    if phase in ("Succeeded", "Aborted"):
        raise CliError(f'datamigration "{name}" is already {phase}: there is nothing to pause')
    if _spec(obj).get("paused") is True:
        _say(out, f'datamigration "{name}" is already paused (spec.paused: true)')
        return EXIT_OK
    api.patch_migration(namespace, name, {"spec": {"paused": True}})
    _say(
        out,
        f'datamigration "{name}" paused (spec.paused: true)',
        "Next: a running backfill stops after the batch in progress commits (it resumes from "
        "there); no new phase starts.",
        f"Resume with: kubectl datamigration resume {_ref(name, namespace)}",
    )
    return EXIT_OK


def resume(api: MigrationApi, namespace: str, name: str, *, out: TextIO) -> int:
    obj = fetch(api, namespace, name)
    if _spec(obj).get("paused") is not True:
        _say(out, f'datamigration "{name}" is not paused (phase {render.phase_of(obj)})')
        return EXIT_OK
    api.patch_migration(namespace, name, {"spec": {"paused": False}})
    _say(
        out,
        f'datamigration "{name}" resumed (spec.paused: false)',
        "Next: the operator continues where it stopped (a paused backfill resumes after its "
        "last committed batch).",
    )
    return EXIT_OK


def abort(
    api: MigrationApi,
    namespace: str,
    name: str,
    *,
    out: TextIO,
    confirm: Callable[[str], bool] | None,
) -> int:
    """Request the abort. `confirm` asks the person; None means no way to ask (and no --yes)."""
    obj = fetch(api, namespace, name)
    phase = render.phase_of(obj)
    if phase == "Aborted":
        _say(out, f'datamigration "{name}" is already aborted')
        return EXIT_OK
    why = rules.why_not_abort(obj.get("status") or {})
    if why is not None:
        raise CliError(
            f'cannot abort datamigration "{name}": {why}',
            *(
                ()
                if phase == "Succeeded"
                else (
                    "a half-done contract cannot be taken back, so the operator ignores abort "
                    "from here on; let it finish, or if it failed, fix the cause and retry",
                )
            ),
        )
    if _spec(obj).get("abort") is True:
        _say(out, f'abort of datamigration "{name}" is already requested (spec.abort: true)')
        return EXIT_OK
    question = (
        f'Abort datamigration "{name}" in namespace "{namespace}" (phase {phase})? '
        "It stops for good and its contract will never run. [y/N] "
    )
    if confirm is None:
        raise CliError(
            "refusing to abort without confirmation: stdin is not a terminal",
            "pass --yes to abort without asking",
        )
    if not confirm(question):
        _say(out, "not aborted")
        return EXIT_FAILURE
    api.patch_migration(namespace, name, {"spec": {"abort": True}})
    _say(
        out,
        f'datamigration "{name}" abort requested (spec.abort: true)',
        "Next: the operator deletes its running Job, marks it Aborted, and never runs the "
        "contract. What expand and backfill already changed stays in the database (additive by "
        "design); clean it up with a new migration if needed.",
    )
    return EXIT_OK


def retry_token(now: datetime) -> str:
    """A fresh value for the retry annotation: the UTC time, to the microsecond."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def retry(
    api: MigrationApi,
    namespace: str,
    name: str,
    *,
    out: TextIO,
    now: Callable[[], datetime] = utcnow,
) -> int:
    obj = fetch(api, namespace, name)
    phase = render.phase_of(obj)
    if phase != "Failed":
        hints = []
        if phase == "Invalid":
            hints.append("an invalid spec is not retried: fix the spec (the operator re-validates")
            hints[-1] += " it on every change)"
        raise CliError(
            f'datamigration "{name}" is {phase}, not Failed: retry re-runs a failed phase only',
            *hints,
        )
    failed = rules.failed_phase(obj.get("status") or {})
    token = retry_token(now())
    api.patch_migration(namespace, name, {"metadata": {"annotations": {RETRY_ANNOTATION: token}}})
    _say(out, f'datamigration "{name}" retry requested ({RETRY_ANNOTATION}: {token})')
    if failed == "codeRollout":
        nxt = "the operator re-arms code-rollout and waits for the rollout proof again"
    elif failed is not None:
        attempt = Status.from_dict(obj.get("status")).record(failed).attempts + 1
        nxt = (
            f"the operator re-arms phase {failed} and starts attempt {attempt} in a new Job; "
            "steps already recorded as done are not run again"
        )
    else:
        nxt = "the operator re-arms the failed phase"
    _say(
        out,
        f"Next: {nxt}.",
        f"Follow it with: kubectl datamigration status {_ref(name, namespace)} --watch",
    )
    return EXIT_OK
