import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def movielens_path():
    """The prepared MovieLens-100k table (`make test` prepares it; otherwise fetched here)."""
    from lightning_des.data.prepare import prepare_movielens100k

    return prepare_movielens100k()


@pytest.fixture(scope="session")
def movielens1m_path():
    """The prepared MovieLens-1M table (`make test` prepares it; otherwise fetched here)."""
    from lightning_des.data.prepare import prepare_movielens1m

    return prepare_movielens1m()


@pytest.fixture(autouse=True)
def _quiet_torchrec():
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    yield
