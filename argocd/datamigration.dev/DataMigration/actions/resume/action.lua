-- Resume a paused migration: spec.paused = false.
obj.spec.paused = false
return obj
