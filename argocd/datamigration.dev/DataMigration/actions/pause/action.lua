-- Pause before the next batch or phase: spec.paused = true.
obj.spec.paused = true
return obj
