"""`kubectl datamigration plan FILE`: what the operator would do with a manifest, offline.

Why: a DataMigration is written by hand and reviewed in a pull request. The reviewer wants to see,
before anything touches a cluster, whether the cluster and the operator will accept it (the CRD's
own schema and rules, then the operator's checks and the lint: `cli.offline`), and if so what
each phase will run, in which Job, which rollout gates the destructive contract, and who must
approve it. Pure: reads the file, contacts nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from datamigration.cli.errors import CliError
from datamigration.cli.manifest import load_documents
from datamigration.cli.offline import check_manifest
from datamigration.cli.render import human_duration, shorten
from datamigration.core.digest import contract_digest
from datamigration.core.jobs import Owner, job_name
from datamigration.core.spec import JOB_PHASES, PHASES, MigrationSpec, PhaseSteps
from datamigration.core.steps import BackfillStep, CommandStep, SqlStep, Step, VerifyStep
from datamigration.lint import Finding, format_findings
from datamigration.validation import UNCHECKED_COMMAND

KIND = "DataMigration"
SUMMARY_WIDTH = 80
_UID_MARK = "@@uid@@"


@dataclass(frozen=True)
class Plan:
    """The text of a plan and whether the file is good to apply."""

    text: str
    ok: bool


def plan_file(path: str) -> Plan:
    """The plan of every DataMigration in the file; `ok` is False if any is invalid."""
    documents = load_documents(path)
    migrations = [d for d in documents if d.get("kind") == KIND]
    if not migrations:
        raise CliError(f"no {KIND} in {path}")
    blocks = [plan_migration(doc) for doc in migrations]
    head = f"Plan for {path}: {len(migrations)} {KIND}{'' if len(migrations) == 1 else 's'}"
    others = sorted({str(d.get("kind") or "?") for d in documents if d.get("kind") != KIND})
    if others:
        skipped = len(documents) - len(migrations)
        head += f" (ignored {skipped} other document{'' if skipped == 1 else 's'}: "
        head += f"{', '.join(others)})"
    return Plan(text="\n\n".join([head, *(b.text for b in blocks)]), ok=all(b.ok for b in blocks))


def plan_migration(document: Mapping[str, Any]) -> Plan:
    """The plan of one DataMigration manifest."""
    raw_meta = document.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    title = f"{KIND} {namespace + '/' if namespace else ''}{name or '<no metadata.name>'}"
    lines = [title]
    checked = check_manifest(document)
    spec = checked.spec
    # Errors of the CRD (metadata.name included) and of the spec are listed under the verdict;
    # lint findings below.
    problems = [f.message for f in checked.findings if f.phase == "" and f.step == ""]
    # Inside this migration's block: no need to repeat its name on each finding.
    findings = [replace(f, migration="") for f in checked.findings if f.phase or f.step]
    errors = [f for f in findings if f.blocking]  # allowed errors (lint.allow) do not block
    ok = not problems and not errors
    if ok:
        lines.append(_field("Verdict", "valid: the operator will accept it"))
    else:
        if not checked.schema.ok:
            verdict = "INVALID (the CRD's schema and rules): the API server refuses it"
        else:
            reason = "the spec" if problems else "lint errors"
            verdict = f"INVALID (InvalidSpec, {reason}): the operator will run nothing"
        lines.append(_field("Verdict", verdict))
        lines += [f"    {problem}" for problem in problems]
    if spec is not None:
        lines += _describe(spec, name or "<name>", namespace, findings)
    if not checked.linted:
        lines.append(_field("Lint", "not run"))
        lines += [f"    {note}" for note in checked.notes]
        return Plan(text="\n".join(lines), ok=False)
    lines.append(_field("Lint", "" if findings else "no findings"))
    if findings:
        lines += [f"    {ln}" for ln in format_findings(findings).splitlines()]
    if checked.commands:
        steps = ", ".join(f'{phase} step "{name}"' for phase, name in checked.commands)
        lines.append(_field("Unchecked", f"{steps} (command)"))
        lines.append(f"    {UNCHECKED_COMMAND}")
    lines += [f"  {note}" for note in checked.notes]
    return Plan(text="\n".join(lines), ok=ok)


# -- the description of a parsed spec -----------------------------------------------------------
def _field(label: str, value: str) -> str:
    return f"  {(label + ':').ljust(12)}{value}".rstrip()


def job_pattern(name: str, namespace: str, phase: str) -> str:
    """The Job name the operator will use, with the attempt and uid prefix as placeholders."""
    real = job_name(Owner(namespace or "default", name, _UID_MARK), phase, 1)
    suffix = f"-{phase}-1-{_UID_MARK[:5]}"
    return real[: -len(suffix)] + f"-{phase}-<attempt>-<uid5>"


@dataclass(frozen=True)
class _Doc:
    """What every part of one migration's description needs."""

    name: str
    namespace: str
    findings: Mapping[tuple[str, str], Sequence[Finding]]  # by (phase, step)
    width: int  # of the step-name column

    def job(self, phase: str) -> str:
        return job_pattern(self.name, self.namespace, phase)

    def steps(self, phase: str, steps: Sequence[Step]) -> list[str]:
        lines = []
        for step in steps:
            head = f"       {step.name.ljust(self.width)}   {step.kind.ljust(8)}   "
            lines.append(head + step_summary(step))
            for finding in self.findings.get((phase, step.name), ()):
                level = finding.severity.value
                if finding.allowed_by is not None:
                    level = f"allowed {level}"
                lines.append(f"       {' ' * self.width}   lint {level}: {finding.rule}")
            if isinstance(step, CommandStep):
                lines.append(f"       {' ' * self.width}   unchecked: see Unchecked below")
        return lines


def _describe(
    spec: MigrationSpec, name: str, namespace: str, findings: Sequence[Finding]
) -> list[str]:
    runner = spec.runner
    runner_parts = [
        f"image {runner.image or '<the operator default>'}",
        "service account "
        + (runner.service_account_name or "datamigration-runner (operator-managed)"),
        f"backoffLimit {runner.backoff_limit}",
        f"lock timeout {runner.lock_timeout_seconds}s",
    ]
    if runner.active_deadline_seconds is not None:
        runner_parts.append(f"deadline {human_duration(runner.active_deadline_seconds)}")
    if runner.allow_checksum_change:
        runner_parts.append("allowChecksumChange")
    by_step: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        by_step.setdefault((finding.phase, finding.step), []).append(finding)
    all_steps = [s for p in JOB_PHASES for s in spec.job_steps(p).steps]
    doc = _Doc(name, namespace, by_step, max((len(s.name) for s in all_steps), default=0))
    lines = [
        _field("Namespace", namespace or "<from -n or the kubeconfig context at apply time>"),
        _field("Database", f"URL from Secret {spec.database.name}, key {spec.database.key}"),
        _field("Runner", ", ".join(runner_parts)),
        _field("Jobs", f"{doc.job('<phase>')} (one per phase and attempt)"),
    ]
    if spec.paused:
        lines.append(_field("Paused", "spec.paused is true: nothing starts until it is resumed"))
    if spec.abort:
        lines.append(_field("Abort", "spec.abort is true: the operator will abort it at once"))
    lines.append("")
    lines += _job_phase(doc, "expand", spec.job_steps("expand"))
    lines += _job_phase(doc, "backfill", spec.job_steps("backfill"))
    lines += [f"  {_number('codeRollout')}. codeRollout", f"       {_rollout(spec)}"]
    lines += _contract(doc, spec)
    lines += operations_sql(spec)
    lines.append("")
    return lines


def operations_sql(spec: MigrationSpec) -> list[str]:
    """The full SQL that `spec.operations` generates, per phase (and the undo), for review."""
    planned = spec.operations
    if not planned.operations:
        return []
    count = len(planned.operations)
    lines = [
        "",
        f"  SQL generated by spec.operations ({count} operation{'' if count == 1 else 's'}, "
        f"dialect {planned.dialect}):",
    ]
    for title, steps in (
        ("expand", planned.expand),
        ("backfill", planned.backfill),
        ("contract", planned.phase("contract")),
        ("rollback (the undo, on abort before contract)", planned.undo),
    ):
        if not steps:
            continue
        lines.append(f"    {title}:")
        for step in steps:
            plain = isinstance(step, SqlStep) and not step.transactional
            note = " [own step, not in a transaction]" if plain else ""
            lines.append(
                f"      -- {step.name} ({step.kind}, {planned.operation_of(step.name)}){note}"
            )
            lines += [f"      {line}" for line in _step_sql(step).splitlines()]
    return lines


def _step_sql(step: Step) -> str:
    if isinstance(step, SqlStep):
        return step.sql + ";"
    if isinstance(step, BackfillStep):
        sets = ", ".join(f"{column} = {expression}" for column, expression in step.set)
        where = f" WHERE {step.where}" if step.where else ""
        return (
            f"UPDATE {step.table} SET {sets}{where};  "
            f"-- in batches of {step.batch_size:,} by {step.key}"
        )
    if isinstance(step, VerifyStep):
        return f"{step.query};  -- must return {step.expect}"
    return step_summary(step)


def _number(phase: str) -> int:
    return PHASES.index(phase) + 1


def _job_phase(doc: _Doc, phase: str, steps: PhaseSteps) -> list[str]:
    number = _number(phase)
    if not steps.steps:
        return [f"  {number}. {phase}: no steps, skipped"]
    return [f"  {number}. {phase} (Job {doc.job(phase)})", *doc.steps(phase, steps.steps)]


def first_statement(sql: str) -> tuple[str, int]:
    """The first statement of a SQL text (comment lines dropped) and how many follow it.

    For display only: a `;` inside a string literal miscounts, which a summary tolerates.
    """
    body = "\n".join(ln for ln in sql.splitlines() if not ln.strip().startswith("--"))
    statements = [" ".join(part.split()) for part in body.split(";")]
    statements = [st for st in statements if st]
    return (statements[0] if statements else ""), max(0, len(statements) - 1)


def step_summary(step: Step, width: int = SUMMARY_WIDTH) -> str:
    """One line saying what a step does, at most about `width` characters."""
    if isinstance(step, SqlStep):
        statement, more = first_statement(step.sql)
        suffix = f" (+{more} more statement{'' if more == 1 else 's'})" if more else ""
        if not step.transactional:
            suffix += " [non-transactional]"
        return shorten(statement, width - len(suffix)) + suffix
    if isinstance(step, BackfillStep):
        suffix = f"; key {step.key}, batches of {step.batch_size:,}"
        text = f"{step.table} SET " + ", ".join(f"{col} = {expr}" for col, expr in step.set)
        if step.where:
            text += f" WHERE {step.where}"
        return shorten(text, width - len(suffix)) + suffix
    if isinstance(step, VerifyStep):
        suffix = f" -> expect {step.expect}"
        return shorten(step.query.strip().rstrip(";"), width - len(suffix)) + suffix
    if isinstance(step, CommandStep):
        return shorten(f"{step.image}: {shlex.join([*step.command, *step.args])}", width)
    return step.kind


def _rollout(spec: MigrationSpec) -> str:
    wl, cr = spec.workload, spec.code_rollout
    if len(spec.workloads) > 1:
        order = "all at once" if cr.together else "in list order, each once the previous is proven"
        each = "; ".join(f"{w.label} ({w.mode}) to {w.image}" for w in spec.workloads)
        return (
            f"{len(spec.workloads)} workloads, {order}: {each}; then prove every pod of every "
            f"one (terminating ones included) runs it; fails after "
            f"{human_duration(cr.timeout_seconds)}"
        )
    target = f"container {wl.container} of {wl.kind} {wl.name}"
    timeout = human_duration(cr.timeout_seconds)
    if cr.mode == "Apply":
        return (
            f"Apply: set {target} to {wl.image}, then prove every pod (terminating ones "
            f"included) runs it; fails after {timeout}"
        )
    image = wl.image or "whatever image its next revision brings"
    return (
        f"Observe: wait for another actor (GitOps) to roll out {image} in {target}, then prove "
        f"every pod runs it; fails after {timeout}"
    )


def _contract(doc: _Doc, spec: MigrationSpec) -> list[str]:
    contract = spec.contract
    number = _number("contract")
    job_steps = spec.job_steps("contract").steps
    if not job_steps:
        return [f"  {number}. contract: no steps, skipped"]
    wl, cr = spec.workload, spec.code_rollout
    image = wl.image or "the new revision's image"
    timeout = human_duration(cr.timeout_seconds)
    lines = [
        f"  {number}. contract (Job {doc.job('contract')})",
        f"       gate: code-rollout proven and still true: {wl.kind} {wl.name}, container "
        f"{wl.container}, image {image} (mode {cr.mode}, timeout {timeout})"
        if len(spec.workloads) == 1
        else "       gate: code-rollout proven and still true for every workload: "
        + ", ".join(f"{w.label} {w.image}" for w in spec.workloads),
    ]
    digest = contract_digest(spec, [w.image for w in spec.workloads])
    if digest is None:
        lines.append(
            "       digest: known once the rollout is observed (mode Observe without "
            "spec.workload.image): the approval names it"
        )
    else:
        lines.append(f"       digest: {digest} (an approval names it)")
    if contract.approval == "Manual":
        if contract.approved_digest is None:
            state = "not approved yet"
        elif contract.approved_digest == digest:
            state = "approved in the manifest (spec.contract.approvedDigest matches)"
        else:
            state = "spec.contract.approvedDigest is stale: it names another contract"
        command = f"kubectl datamigration approve {doc.name}"
        lines.append(f"       approval: Manual ({state}): waits for `{command}`")
    else:
        lines.append("       approval: Automatic: starts as soon as the gate holds")
    verify = (*spec.operations.verify, *contract.verify.steps)
    steps = (*spec.operations.contract, *contract.steps.steps)
    if verify:
        lines.append("       verify first (a mismatch stops the contract before any step runs):")
        lines += doc.steps("contract", verify)
    if steps:
        lines.append("       then:")
        lines += doc.steps("contract", steps)
    return lines
