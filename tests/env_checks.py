"""What the environment lets the tests check, said out loud: no environment gap passes silently.

``make test`` sets POLYHEAD_REQUIRE_LEGACY=1 and POLYHEAD_REQUIRE_PI=1; there a missing legacy
runtime or emulated Pi is a failure. Elsewhere (``make test-fast``, bare pytest) a test that has to
accept less names why, as a warning in the summary and in the session header (conftest.py).
"""

from __future__ import annotations

import os
import warnings


class EnvironmentGap(UserWarning):
    """A check this environment cannot make (shown in pytest's warnings summary)."""


def legacy_missing_reason() -> str | None:
    """Why tflite-runtime 2.14 cannot be checked here (None: it can)."""
    from convert.compat import legacy_python

    if legacy_python() is None:
        return "no .venv-legacy (make setup-legacy) and POLYHEAD_LEGACY_PYTHON unset"
    return None


def accept_unchecked_legacy(what: str) -> None:
    """Call where a test accepts a tflite-runtime status of "unchecked" because there is no legacy env:
    a failure under POLYHEAD_REQUIRE_LEGACY=1, else a warning naming what went unchecked and why."""
    reason = legacy_missing_reason()
    if reason is None:
        return
    if os.environ.get("POLYHEAD_REQUIRE_LEGACY") == "1":
        import pytest

        pytest.fail(f"POLYHEAD_REQUIRE_LEGACY=1 but {reason}: {what} would be unchecked")
    warnings.warn(f"{what}: tflite-runtime 2.14 compatibility unchecked ({reason})", EnvironmentGap, stacklevel=2)
