"""tunewise: data-centric fine-tuning of open LLMs. `tunewise.Project` and `tunewise.load_config` are the Python
API (`tunewise.api`), loaded on first use so that `import tunewise` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# No function here shares a name with a subpackage (curate, train, evaluate): importing one would replace it.
__all__ = ["CurationResult", "ModelScore", "Project", "RunResult", "TunewiseError", "load_config"]

if TYPE_CHECKING:
    from tunewise.api import CurationResult, ModelScore, Project, RunResult, load_config
    from tunewise.errors import TunewiseError


def __getattr__(name: str) -> Any:
    if name == "TunewiseError":
        from tunewise.errors import TunewiseError

        return TunewiseError
    if name in __all__:
        from tunewise import api

        return getattr(api, name)
    raise AttributeError(f"module 'tunewise' has no attribute {name!r}")
