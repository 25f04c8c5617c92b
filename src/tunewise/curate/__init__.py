"""Curation: small steps that keep a record or drop it with a reason; nothing is lost silently."""
