"""Optional dependencies: import one, or fail with a one-line message naming the pip extra.

The CLI turns MissingExtra into `error: <message>` and exit status 2, so a user without the
extra sees what to install instead of an ImportError traceback."""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(RuntimeError):
    """An optional dependency is not installed; the message says which extra provides it."""


def require(module: str, extra: str) -> ModuleType:
    """Imports and returns `module`, or raises MissingExtra naming `tinylm[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        # `from None`: the chained ImportError adds nothing the message does not say
        raise MissingExtra(f"{module} is not installed: pip install 'tinylm[{extra}]'") from None
