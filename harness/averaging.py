"""Framework-free facts of evaluating at other weights than the trained ones, shared by the backends'
`averaging.py` (`harness/backends/<framework>/averaging.py`)."""

from __future__ import annotations

BN_BATCHES = 50  # schedulefree README, "Caveats": itertools.islice(train_loader, 50)
