-- Stop the migration before contract, for good: spec.abort = true. The operator refuses it once
-- the contract has started (and says so in status).
obj.spec.abort = true
return obj
