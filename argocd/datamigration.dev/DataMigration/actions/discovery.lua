-- Argo CD resource actions of a DataMigration (argocd-cm key
-- resource.customizations.actions.datamigration.dev_DataMigration). Each action edits the spec
-- or an annotation, as `kubectl datamigration <verb>` does; the operator does the rest.
-- An action is offered (disabled = false) only where the operator would act on it, by the same
-- rules as the CLI's (docs/cli.md).
-- Only the base library is used, as Argo CD gives custom action scripts.

local actions = {}
local spec = obj.spec or {}
local status = obj.status or {}
local phase = status.phase
local contract = spec.contract or {}

local finished = phase == "Succeeded" or phase == "Aborted"

-- The contract has started once its phase record left Pending: the operator refuses an abort
-- from then on (a half-done contract cannot be taken back).
local contractStarted = false
if status.phases ~= nil and status.phases.contract ~= nil then
  local state = status.phases.contract.state
  contractStarted = state ~= nil and state ~= "Pending"
end

-- As `kubectl datamigration approve`: it approves the digest the operator shows
-- (status.contract.digest), so it is offered only once that is known and not yet approved;
-- pointless without a contract or with approval Automatic.
local digest = (status.contract or {}).digest
actions["approve"] = {
  ["displayName"] = "Approve contract",
  ["disabled"] = finished or spec.contract == nil or contract.approval == "Automatic"
    or digest == nil or contract.approvedDigest == digest,
}
actions["pause"] = {
  ["displayName"] = "Pause",
  ["disabled"] = finished or spec.paused == true,
}
actions["resume"] = {
  ["displayName"] = "Resume",
  ["disabled"] = spec.paused ~= true,
}
actions["abort"] = {
  ["displayName"] = "Abort (before contract)",
  ["disabled"] = finished or phase == "Invalid" or spec.abort == true or contractStarted
    or phase == "Contracting",
}
-- A retry is pending while the annotation differs from the token the operator last acted on.
local annotations = (obj.metadata or {}).annotations or {}
local retryToken = annotations["datamigration.dev/retry"]
local retryPending = retryToken ~= nil and retryToken ~= status.retryToken

actions["retry"] = {
  ["displayName"] = "Retry failed phase",
  ["disabled"] = phase ~= "Failed" or retryPending,
}
return actions
