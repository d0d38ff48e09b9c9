-- Approve the contract: spec.contract.approved = true (kubectl datamigration approve).
if obj.spec.contract == nil then
  obj.spec.contract = {}
end
obj.spec.contract.approved = true
return obj
