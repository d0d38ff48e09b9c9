"""Every condition reason and Event reason the operator uses, in one place.

CamelCase, stable: users grep for them, `kubectl wait` and Argo CD health checks match on them.
"""

from __future__ import annotations

from typing import Final

# Condition types.
READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
STALLED: Final = "Stalled"
AWAITING_APPROVAL: Final = "AwaitingApproval"
READY_FOR_ROLLOUT: Final = "ReadyForRollout"
ROLLOUT_VERIFIED: Final = "RolloutVerified"

# Reasons: progress.
PENDING: Final = "Pending"
PHASE_RUNNING: Final = "PhaseRunning"
PHASE_STARTED: Final = "PhaseStarted"
PHASE_SUCCEEDED: Final = "PhaseSucceeded"
WAITING_FOR_WORKLOAD: Final = "WaitingForWorkload"
ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
ROLLOUT_STARTED: Final = "RolloutStarted"
ROLLOUT_PROVEN: Final = "RolloutProven"
APPROVAL_REQUIRED: Final = "ApprovalRequired"
APPROVED: Final = "Approved"
SUCCEEDED: Final = "Succeeded"
PAUSED: Final = "Paused"
RESUMED: Final = "Resumed"
RETRIED: Final = "Retried"
CHANGE_ACCEPTED: Final = "ChangeAccepted"
PAUSING: Final = "Pausing"

# Reasons: failures and blocks.
INVALID_SPEC: Final = "InvalidSpec"
SECRET_NOT_FOUND: Final = "SecretNotFound"  # noqa: S105 - a reason, not a secret
WORKLOAD_NOT_FOUND: Final = "WorkloadNotFound"
JOB_FAILED: Final = "JobFailed"
VERIFY_FAILED: Final = "VerifyFailed"
ROLLOUT_FAILED: Final = "RolloutFailed"
ROLLOUT_TIMED_OUT: Final = "RolloutTimedOut"
ABORTED: Final = "Aborted"
ROLLING_BACK: Final = "RollingBack"
ROLLED_BACK: Final = "RolledBack"
ROLLBACK_FAILED: Final = "RollbackFailed"
SECRET_KEY_NOT_FOUND: Final = "SecretKeyNotFound"  # noqa: S105 - a reason, not a secret
APPROVAL_STALE: Final = "ApprovalStale"
SPEC_CHANGED: Final = "SpecChanged"
WORKLOAD_CONFLICT: Final = "WorkloadConflict"
ROLLOUT_REGRESSED: Final = "RolloutRegressed"
#: The contract Job found sessions of the old code in the database (databaseSessions, exit 10).
OLD_SESSIONS_CONNECTED: Final = "OldSessionsConnected"
# A phase pod that cannot start stalls with the pod's own waiting reason (core/pods.py):
# CreateContainerConfigError, ImagePullBackOff, ErrImagePull, InvalidImageName, Unschedulable.
