-- Approve exactly the contract the operator shows, as `kubectl datamigration approve` does:
-- spec.contract.approvedDigest = status.contract.digest. An edit of the contract's steps,
-- verify queries or target image after this changes the digest and needs a new approval.
-- Offered only while a digest is known (discovery.lua); refused without one.
local known = (obj.status or {}).contract or {}
if known.digest == nil then
  error("the contract digest is not known yet (status.contract.digest): nothing to approve")
end
if obj.spec.contract == nil then
  obj.spec.contract = {}
end
obj.spec.contract.approved = true
obj.spec.contract.approvedDigest = known.digest
return obj
