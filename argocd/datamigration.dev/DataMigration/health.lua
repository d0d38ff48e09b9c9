-- Argo CD health of a DataMigration (argocd-cm key
-- resource.customizations.health.datamigration.dev_DataMigration). Design: docs/gitops-argocd.md.
--
-- Argo CD makes a sync wave wait while a resource is Progressing or Suspended and fails the sync
-- when one is Degraded. A DataMigration sits in a wave BEFORE the workload whose new code needs
-- it, so its health must never wait for that workload's rollout, which only a later wave starts:
--   Degraded     phase Failed, Invalid, Aborted or RollingBack (an abort undoing expand), or
--                Stalled=True: the operator's own verdict that nothing moves without a person
--                (retry, a fixed spec, a missing object), or that the new code must not roll out.
--   Healthy      Succeeded; and from ReadyForRollout=True (expand and backfill done) on, whatever
--                follows: the rollout, the wait for approval, the contract, a pause.
--   Suspended    spec.paused while expand or backfill is not done: the new code must wait too.
--   Progressing  the rest: no status yet, a spec the operator has not observed yet, expand or
--                backfill running or about to start.
-- Only the base library is used (no string, math or os), as Argo CD gives custom health scripts.

local hs = {}

local function condition(status, conditionType)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function isTrue(status, conditionType)
  local c = condition(status, conditionType)
  return c ~= nil and c.status == "True"
end

local function text(value)
  if value == nil or value == "" then
    return nil
  end
  return tostring(value)
end

-- "<label>: <detail>", or the label alone when there is no detail.
local function describe(label, detail)
  if detail == nil then
    return label
  end
  return label .. ": " .. detail
end

local status = obj.status
local spec = obj.spec or {}
local metadata = obj.metadata or {}

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick the migration up"
  return hs
end

local generation = metadata.generation
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = tostring(status.phase)
local message = text(status.message)

local aborting = phase == "Aborted" or phase == "RollingBack"
if phase == "Failed" or phase == "Invalid" or aborting or isTrue(status, "Stalled") then
  local stalled = condition(status, "Stalled")
  if message == nil and stalled ~= nil then
    message = text(stalled.message)
  end
  hs.status = "Degraded"
  hs.message = describe(phase, message)
  return hs
end

if phase == "Succeeded" or isTrue(status, "Ready") then
  hs.status = "Healthy"
  hs.message = describe("Succeeded", message)
  return hs
end

local paused = spec.paused == true or phase == "Paused"

if isTrue(status, "ReadyForRollout") then
  hs.status = "Healthy"
  if phase == "AwaitingApproval" or isTrue(status, "AwaitingApproval") then
    hs.message = describe("Expand and backfill done; AwaitingApproval", message)
  elseif paused then
    hs.message = describe("Expand and backfill done; Paused", message)
  else
    hs.message = describe("Expand and backfill done; " .. phase, message)
  end
  return hs
end

if paused then
  hs.status = "Suspended"
  if phase == "Paused" then
    hs.message = describe("Paused", message)
  else
    hs.message = describe("Pausing at the next checkpoint; " .. phase, message)
  end
  return hs
end

hs.status = "Progressing"
hs.message = describe(phase, message)
if status.progress ~= nil and text(status.progress.summary) ~= nil then
  hs.message = hs.message .. " (" .. tostring(status.progress.summary) .. ")"
end
return hs
