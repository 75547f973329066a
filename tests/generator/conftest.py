import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every generator test runs single-threaded (tests/conftest.py)."""
