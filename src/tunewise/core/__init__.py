"""Leaf utilities every stage shares: bounded YAML input, safe file reads and writes."""
