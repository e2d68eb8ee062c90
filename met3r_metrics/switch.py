"""One on/off switch of a process-wide fast path: a module flag, a context manager and an environment variable.

The fused Triton kernels (:mod:`met3r_metrics.kernels`) and the CUDA-graph replay
(:mod:`met3r_metrics.cuda_graphs`) are each switched by one :class:`Switch`: on by default, off inside
``with switch.enabled(False):``, after ``switch.set_enabled(False)``, or while its environment variable is
``"1"`` (read at each call, so a variable set after import counts too).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["Switch"]


class Switch:
    """A process-wide switch: on unless :meth:`set_enabled` turned it off or ``env_var`` is ``"1"``.

    >>> s = Switch("MET3R_EXAMPLE_SWITCH")
    >>> s.is_enabled()
    True
    >>> with s.enabled(False):
    ...     s.is_enabled()
    False
    >>> s.is_enabled()
    True
    """

    def __init__(self, env_var: str) -> None:
        self.env_var = env_var
        self._on = True

    def set_enabled(self, flag: bool) -> None:
        """Switch on or off for the whole process."""
        self._on = bool(flag)

    def is_enabled(self) -> bool:
        """The flag is on and the environment variable is not ``"1"``."""
        return self._on and os.environ.get(self.env_var, "") != "1"

    @contextlib.contextmanager
    def enabled(self, flag: bool) -> Iterator[None]:
        """``with enabled(False):`` switches off inside the block (the previous flag comes back on exit)."""
        saved = self._on
        self.set_enabled(flag)
        try:
            yield
        finally:
            self._on = saved
