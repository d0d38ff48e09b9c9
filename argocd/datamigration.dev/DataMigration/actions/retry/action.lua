-- Retry the failed phase: any new value of the datamigration.dev/retry annotation re-arms it for
-- one more attempt. The value is the current time (UTC), made unique if it repeats.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local key = "datamigration.dev/retry"
local token = os.date("!%Y-%m-%dT%H:%M:%SZ")
if obj.metadata.annotations[key] == token then
  token = token .. "-again"
end
obj.metadata.annotations[key] = token
return obj
