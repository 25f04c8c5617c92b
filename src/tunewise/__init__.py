"""tunewise: data-centric fine-tuning of open LLMs."""

__version__ = "0.1.0"
