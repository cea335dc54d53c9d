"""Versioned rule files. `default.toml` is RULES.md of the contract."""
