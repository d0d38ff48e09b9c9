"""Keep the garbage collector's full collections off the operator's reaction path.

Why: CPython's full (generation 2) collection stops every thread while it walks every tracked
object. The operator holds hundreds of thousands of them that live as long as the process (the
imported modules: kopf, aiohttp, the Kubernetes client's models; then the watch caches' objects
after the first listing), and the event stream of a busy cluster allocates enough to trigger a
full collection every few seconds: measured with 1,000 migrations, 50 to 200 ms pauses during a
rollout's proof, which every contract Job waited through (bench/scale.py,
`reaction_p99_ms_under_fanout`).

What it does: `gc.freeze()` moves every object alive at that moment to a permanent generation
that collections no longer walk (the technique CPython documents for long-lived processes).
Once after the imports (`after_imports`), once more when the work that the first listing caused
is done (`after_start`, called by the reconciler when its queue first drains): what is alive
then is, for the most part, what lives as long as the process. A collection runs first each time
so that nothing already garbage is frozen. Objects frozen and freed later are freed by reference
counting as usual; only a reference cycle among them would stay (the price is bounded by what
was alive at the two moments).
"""

from __future__ import annotations

import functools
import gc
import logging
import time

log = logging.getLogger(__name__)


def _freeze(moment: str) -> None:
    began = time.monotonic()
    gc.collect()
    gc.freeze()
    log.info(
        "garbage collector: %d objects alive %s kept out of full collections (%.0f ms)",
        gc.get_freeze_count(),
        moment,
        (time.monotonic() - began) * 1000,
    )


def after_imports() -> None:
    _freeze("after the imports")


@functools.cache  # once per process
def after_start() -> None:
    """The first time the work queue drains after the watches' first listing."""
    _freeze("after the first listing's work")
