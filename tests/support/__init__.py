"""Builders and scanners the tests share: tiny models and data, hostile inputs, resume and safety helpers."""
