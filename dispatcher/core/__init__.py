"""The pure core of sweepq: no I/O, no SDK imports, no clocks (``now`` is always injected)."""
