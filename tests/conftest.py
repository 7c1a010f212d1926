"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from helpers import use_named_temporaries


@pytest.fixture(params=["tmpfile", "named"])
def temporaries(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs twice: saves write unnamed files (``O_TMPFILE``), then named hidden
    temporaries, as on systems without it."""
    if request.param == "named":
        use_named_temporaries(monkeypatch)
    return request.param
