"""Leaf utilities every stage shares: bounded YAML input, safe file reads and writes (atomic files and
directories), file hashing, process liveness, number and time formats, the HTML page stack and figures."""
