"""The accrual engine: the programme's rules and member accounts.

Pure domain model and application service. Nothing in this package talks to
Kafka, HTTP or a database driver directly; adapters in `accrual` do.
"""
