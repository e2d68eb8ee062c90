"""Shared fixtures. Golden data lives in ../shared/golden relative to the repository root and never skips."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_ROOT = (REPO_ROOT / ".." / "shared" / "golden").resolve()


def golden_path(*parts: str) -> Path:
    """Path inside ../shared/golden; fails the test (never skips) when the data is missing."""
    path = GOLDEN_ROOT.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"golden data missing: {path} (expected ../shared/golden beside the repository root)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def golden_root() -> Path:
    return golden_path()
