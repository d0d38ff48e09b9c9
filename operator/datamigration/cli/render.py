"""Pure text rendering for `kubectl datamigration`: tables, ages, progress bars, `status`.

Why a separate module: everything a person reads is built here from plain API objects and an
explicit `now`, so each screen can be tested as data without a cluster or a clock. Nothing here
talks to the API, reads files or looks at the terminal.

Conventions follow kubectl so the output feels native: upper-case table headers, columns
separated by three spaces, ages in kubectl's `HumanDuration` form (`45s`, `3m12s`, `5h`, `2d3h`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from datamigration.core.digest import short
from datamigration.core.rules import SETTLED
from datamigration.core.spec import PHASES

__all__ = ["short"]

JSON = Mapping[str, Any]

#: Summary phases after which nothing changes by itself (`status --watch` stops there).
TERMINAL_PHASES = SETTLED
#: Recent Events shown by `status`.
MAX_EVENTS = 10
BAR_WIDTH = 30
NONE = "-"
LABEL_WIDTH = 12


# -- time ----------------------------------------------------------------------------------------
def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as the API writes it (`Z` or offset, optional fraction)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's `HumanDuration`: `45s`, `3m12s`, `42m`, `5h3m`, `20h`, `2d3h`, `40d`, `3y2d`."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        return f"{years}y" if days % 365 == 0 else f"{years}y{days % 365}d"
    return f"{years}y"


def age(timestamp: object, now: datetime) -> str:
    """How long ago `timestamp` was, or `-` when it is missing or unreadable."""
    moment = parse_time(timestamp)
    if moment is None:
        return NONE
    return human_duration((now - moment).total_seconds())


def duration(started: object, finished: object, now: datetime) -> str:
    """A phase's run time: start to finish, or start to `now` while it runs."""
    start = parse_time(started)
    if start is None:
        return NONE
    end = parse_time(finished) or now
    return human_duration((end - start).total_seconds())


# -- small formatters ----------------------------------------------------------------------------
def count(value: object) -> str:
    """`1234567` as `1,234,567`; anything not an integer as `-`."""
    if isinstance(value, bool) or not isinstance(value, int):
        return NONE
    return f"{value:,}"


def shorten(text: str, width: int) -> str:
    """One line of at most `width` characters: whitespace collapsed, `...` where cut."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(0, width - 3)].rstrip() + "..."


def progress_bar(percent: int, width: int = BAR_WIDTH) -> str:
    """`[##########--------------------]  33%`; the percentage is clamped to 0..100."""
    clamped = max(0, min(100, percent))
    filled = round(width * clamped / 100)
    return f"[{'#' * filled}{'-' * (width - filled)}] {clamped:3d}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """A kubectl-style table: upper-case headers, left-aligned, three spaces between columns."""
    cells = [[h.upper() for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append((indent + "   ".join([*padded, row[-1]])).rstrip())
    return "\n".join(lines)


def _get(obj: object, *path: str) -> Any:
    """`obj[path[0]][path[1]]...`, or None as soon as a level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _text(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


def condition(obj: JSON, type_: str) -> JSON | None:
    """The status condition of that type, if any."""
    for cond in _get(obj, "status", "conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def phase_of(obj: JSON) -> str:
    """The summary phase; `Pending` until the operator has written a status."""
    return str(_get(obj, "status", "phase") or "Pending")


# -- list ----------------------------------------------------------------------------------------
def render_list(items: Sequence[JSON], now: datetime, *, all_namespaces: bool = False) -> str:
    """The `list` table: `kubectl get dm` columns plus Progress and the Ready reason."""
    headers = ["NAME", "PHASE", "PROGRESS", "WORKLOAD", "REASON", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    ordered = sorted(
        items,
        key=lambda o: (str(_get(o, "metadata", "namespace")), str(_get(o, "metadata", "name"))),
    )
    for obj in ordered:
        ready = condition(obj, "Ready") or {}
        row = [
            str(_get(obj, "metadata", "name")),
            phase_of(obj),
            _text(_get(obj, "status", "progress", "summary")),
            _text(_get(obj, "spec", "workload", "name")),
            _text(ready.get("reason")),
            age(_get(obj, "metadata", "creationTimestamp"), now),
        ]
        if all_namespaces:
            row.insert(0, str(_get(obj, "metadata", "namespace")))
        rows.append(row)
    return table(headers, rows)


# -- status --------------------------------------------------------------------------------------
def _field(label: str, value: str) -> str:
    """`Label:` padded to a common width, then the value (as `kubectl describe` aligns)."""
    head = f"{label}:" if label else ""
    return f"{head.ljust(LABEL_WIDTH)}{value}"


def _workload_line(spec: JSON) -> str:
    workload = _get(spec, "workload") or {}
    mode = _get(spec, "codeRollout", "mode") or "Apply"
    many = _get(spec, "workloads")
    if isinstance(many, list) and many:
        named = []
        for entry in many:
            if not isinstance(entry, Mapping):
                continue
            labels = _get(entry, "selector", "matchLabels") or {}
            where = entry.get("name") or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            own = entry.get("mode") or ("Observe" if entry.get("kind") == "Pods" else mode)
            named.append(f"{entry.get('kind')}/{where} {entry.get('image')} ({own})")
        together = ", together" if _get(spec, "codeRollout", "together") else ", in order"
        return f"{len(named)} workloads{together}: " + "; ".join(named)
    parts = [
        f"{workload.get('kind') or 'Deployment'}/{_text(workload.get('name'))}",
        f"container {_text(workload.get('container'))}",
    ]
    image = workload.get("image")
    if image:
        parts.append(f"image {image}")
    elif mode == "Observe":
        parts.append("image: any new revision")
    timeout = _get(spec, "codeRollout", "timeoutSeconds")
    rollout = f"rollout {mode}"
    if isinstance(timeout, int):
        rollout += f", timeout {human_duration(timeout)}"
    return f"{', '.join(parts)} ({rollout})"


def _contract_line(spec: JSON, status: JSON) -> str | None:
    contract = _get(spec, "contract")
    if not isinstance(contract, Mapping):
        return None
    approval = contract.get("approval") or "Manual"
    verify = contract.get("verify") or []
    steps = contract.get("steps") or []
    queries = "query" if len(verify) == 1 else "queries"
    parts = [f"{len(steps)} step(s)", f"{len(verify)} verify {queries}"]
    digest = _get(status, "contract", "digest")
    approved = contract.get("approvedDigest")
    if approval == "Manual" or approved:
        if not approved:
            state = "not approved"
        elif approved == digest:
            state = f"approved {short(str(approved))}"
        else:
            state = f"approval stale (approved {short(str(approved))})"
        parts.append(f"approval {approval}: {state}")
    else:
        parts.append("approval Automatic")
    if digest:
        parts.append(f"digest {short(str(digest))}")
    elif _get(status, "contract", "message"):
        parts.append(f"digest not known yet: {_get(status, 'contract', 'message')}")
    return ", ".join(parts)


def _phase_table(status: JSON, now: datetime) -> list[str]:
    records = _get(status, "phases") or {}
    rows, notes = [], []
    # rollback: shown once an abort started one (it undid expand, see status.phases.rollback)
    shown = [
        *PHASES,
        *(["rollback"] if isinstance(records, Mapping) and "rollback" in records else []),
    ]
    for phase in shown:
        rec = records.get(phase) if isinstance(records, Mapping) else None
        rec = rec if isinstance(rec, Mapping) else {}
        state = str(rec.get("state") or "Pending")
        rows.append(
            [
                phase,
                state,
                str(rec.get("attempts") or 0),
                _text(rec.get("job")),
                duration(rec.get("startedAt"), rec.get("finishedAt"), now),
            ]
        )
        message = rec.get("message")
        if message and state != "Skipped":
            notes.append(f"  {phase}: {message}")
    return [table(["PHASE", "STATE", "ATTEMPTS", "JOB", "DURATION"], rows, indent="  "), *notes]


def render_progress(progress: JSON, now: datetime) -> list[str]:
    """The progress block: what runs (phase, step i/n) and, for row-counting steps, a bar."""
    phase = _text(progress.get("phase"))
    head = phase
    index, total = progress.get("stepIndex"), progress.get("stepCount")
    if isinstance(index, int) and isinstance(total, int) and total:
        head += f" step {index}/{total}"
    if progress.get("step"):
        head += f" {progress['step']}"
    summary = progress.get("summary")
    if summary and (not isinstance(total, int) or not progress.get("step")):
        head += f": {summary}"
    if progress.get("updatedAt"):
        head += f" (updated {age(progress.get('updatedAt'), now)} ago)"
    lines = [_field("Progress", head)]
    percent = _int(progress.get("percent"))
    estimated = _int(progress.get("rowsEstimated"))
    done = _int(progress.get("rowsDone"))
    if not estimated and not percent:
        return lines  # a step without a row count: step i/n says it all
    if percent is None and estimated and done is not None:
        percent = min(100, done * 100 // estimated)
    bar = [progress_bar(percent or 0)]
    if estimated or done is not None:
        bar.append(f"{count(done)}/{count(estimated)} rows")
    rate = _int(progress.get("rowsPerSecond"))
    if rate:
        bar.append(f"{count(rate)} rows/s")
        if estimated and done is not None and estimated > done:
            bar.append(f"~{human_duration((estimated - done) / rate)} left")
    batch = _int(progress.get("batchSize"))
    if batch:
        bar.append(f"batch {count(batch)}")
    lines.append("  " + "   ".join(bar))
    return lines


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def render_rollout(rollout: JSON) -> list[str]:
    """The last observation of the workload's rollout, as the operator recorded it."""
    head = []
    if rollout.get("revision"):
        head.append(f"revision {rollout['revision']}")
    if rollout.get("image"):
        head.append(f"image {rollout['image']}")
    verified = "verified" if rollout.get("verified") else "not verified"
    lines = [_field("Rollout", ", ".join([*head, verified]))]
    lines.append(
        f"  {count(rollout.get('replicas'))} replicas: "
        f"{count(rollout.get('updatedReplicas'))} updated, "
        f"{count(rollout.get('availableReplicas'))} available, "
        f"{count(rollout.get('oldPods'))} old pods, "
        f"{count(rollout.get('terminatingPods'))} terminating"
    )
    if rollout.get("message"):
        lines.append(f"  {rollout['message']}")
    workloads = rollout.get("workloads")
    if isinstance(workloads, list) and len(workloads) > 1:
        rows = [
            [
                f"{w.get('kind')}/{w.get('name')}",
                "verified" if w.get("verified") else "NOT verified",
                f"{count(w.get('updatedReplicas'))}/{count(w.get('replicas'))} updated, "
                f"{count(w.get('oldPods'))} old pods",
                _text(w.get("message")),
            ]
            for w in workloads
            if isinstance(w, Mapping)
        ]
        lines.append("  Workloads:")
        lines.append(table(["WORKLOAD", "PROOF", "PODS", "WHY"], rows, indent="    "))
    return lines


def render_conditions(conditions: Sequence[JSON], now: datetime) -> list[str]:
    rows = [
        [
            str(c.get("type", "")),
            str(c.get("status", "")),
            _text(c.get("reason")),
            age(c.get("lastTransitionTime"), now),
            str(c.get("message") or ""),
        ]
        for c in conditions
    ]
    return ["Conditions:", table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows, "  ")]


def event_time(event: JSON) -> str:
    """When an Event last happened, whichever of the API's time fields it carries."""
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        _get(event, "series", "lastObservedTime"),
        event.get("firstTimestamp"),
        _get(event, "metadata", "creationTimestamp"),
    ):
        if value:
            return str(value)
    return ""


def recent_events(events: Sequence[JSON], uid: str | None, limit: int = MAX_EVENTS) -> list[JSON]:
    """This object's Events (a same-named predecessor's are dropped by uid), oldest first.

    Event times have one-second resolution and the API lists Events by name (random suffixes),
    so Events of the same second are ordered by their resourceVersion: the order the API server
    stored them, which is the order they were posted (RolloutStarted before RolloutProven)."""
    mine = [e for e in events if not uid or _get(e, "involvedObject", "uid") in (None, "", uid)]
    mine.sort(key=_event_order)
    return mine[-limit:] if limit > 0 else []


def _event_order(event: JSON) -> tuple[datetime, int]:
    version = str(_get(event, "metadata", "resourceVersion") or "")
    return (
        parse_time(event_time(event)) or datetime.min.replace(tzinfo=UTC),
        int(version) if version.isdigit() else 0,
    )


def render_events(events: Sequence[JSON], now: datetime) -> list[str]:
    if not events:
        return [_field("Events", "<none>")]
    rows = []
    for event in events:
        when = age(event_time(event), now)
        times = event.get("count")
        if isinstance(times, int) and times > 1:
            when += f" (x{times})"
        rows.append(
            [
                when,
                str(event.get("type", "")),
                str(event.get("reason", "")),
                " ".join(str(event.get("message", "")).split()),
            ]
        )
    return ["Events:", table(["AGE", "TYPE", "REASON", "MESSAGE"], rows, "  ")]


def next_step_hint(obj: JSON) -> str | None:
    """What a person most likely does next, as a command line, for phases that wait on one."""
    name = str(_get(obj, "metadata", "name"))
    namespace = str(_get(obj, "metadata", "namespace"))
    target = f"{name} -n {namespace}"
    phase = phase_of(obj)
    if phase == "AwaitingApproval":
        return f"kubectl datamigration approve {target}"
    if phase == "Paused" or _get(obj, "spec", "paused") is True:
        return f"kubectl datamigration resume {target}"
    if phase == "Failed":
        return f"fix the cause above, then: kubectl datamigration retry {target}"
    if phase == "Invalid":
        return "fix the spec (see Message); the operator re-validates it on every change"
    return None


def render_status(obj: JSON, events: Sequence[JSON], now: datetime) -> str:
    """The `status` screen of one DataMigration and its recent Events."""
    meta: JSON = _get(obj, "metadata") or {}
    spec: JSON = _get(obj, "spec") or {}
    status: JSON = _get(obj, "status") or {}
    phase = phase_of(obj)
    flags = []
    if spec.get("paused") is True and phase != "Paused":
        flags.append("paused")
    if spec.get("abort") is True and phase != "Aborted":
        flags.append("abort requested")
    fields = [
        ("Name", str(meta.get("name"))),
        ("Namespace", str(meta.get("namespace"))),
        ("Phase", phase + (f" ({', '.join(flags)})" if flags else "")),
        ("Message", _text(status.get("message"))),
        ("Workload", _workload_line(spec)),
    ]
    contract = _contract_line(spec, status)
    if contract:
        fields.append(("Contract", contract))
    fields.append(("Age", age(meta.get("creationTimestamp"), now)))
    lines = [_field(label, value) for label, value in fields]
    if not status:
        lines.append(_field("", "(no status yet: is the operator running in this cluster?)"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        lines.append(
            _field(
                "",
                f"(status describes generation {observed}; the spec is at {generation}:"
                " the operator has not caught up yet)",
            )
        )
    hint = next_step_hint(obj)
    if hint:
        lines.append(_field("Next", hint))

    lines += ["", "Phases:", *_phase_table(status, now)]
    progress = status.get("progress")
    if isinstance(progress, Mapping) and progress:
        lines += ["", *render_progress(progress, now)]
    rollout = status.get("rollout")
    if isinstance(rollout, Mapping) and rollout:
        lines += ["", *render_rollout(rollout)]
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    if conditions:
        lines += ["", *render_conditions(conditions, now)]
    lines += ["", *render_events(recent_events(events, meta.get("uid")), now)]
    return "\n".join(lines)
