"""Adapters and entry points of the accrual engine: settings, storage, the
file ingester, the command line (and, later, the stream worker and web app).
They depend on `engine`, `projections` and `schemas`; never the other way."""
