"""Shared fixtures. Tests that need ../shared skip when it is absent, and fail when CT_REQUIRE_SHARED=1 (CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ct_pipeline.cache import CropCache
from ct_pipeline.catalog import open_catalog
from tests.helpers.tiny_luna import write_tiny_luna

SHARED_DIR = Path(__file__).resolve().parent.parent.parent / "shared"


def _shared_path(*parts: str) -> Path:
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing (../shared is only present in the project's CI and dev machines)"
        if os.environ.get("CT_REQUIRE_SHARED") == "1":
            pytest.fail(message + " but CT_REQUIRE_SHARED=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip (fail under CT_REQUIRE_SHARED=1)."""
    return _shared_path("data")


@pytest.fixture(scope="session")
def real_dicom_dir() -> Path:
    """The real 99-slice CPTAC chest CT."""
    return _shared_path("data", "dicom", "C3N-00247-chest-ct")


@pytest.fixture(scope="session")
def book_weights_dir() -> Path:
    return _shared_path("data", "book-weights")


@pytest.fixture(scope="session")
def luna16_tables_dir() -> Path:
    return _shared_path("data", "luna16")


@pytest.fixture()
def tiny(tmp_path):
    """(data root, catalog, crop cache) of tests/helpers/tiny_luna.py's 3 coded series, in ``tmp_path``."""
    root = write_tiny_luna(tmp_path / "luna")
    catalog = open_catalog([root], tmp_path / "cache")
    cache = CropCache(tmp_path / "cache")
    yield root, catalog, cache
    cache.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's CT_DATA_ROOT or PACS settings, or writes the checkout's data_cache/."""
    monkeypatch.delenv("CT_DATA_ROOT", raising=False)
    for name in (
        "CT_DICOMWEB",
        "CT_DICOMWEB_USER",
        "CT_DICOMWEB_PASSWORD",
        "CT_DICOMWEB_TOKEN",
        "CT_DICOMWEB_NETRC",
        "CT_DICOMWEB_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)  # nor the developer's PACS
    monkeypatch.setenv("CT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def pytest_configure(config) -> None:
    """Hypothesis profiles for the property tests (tests/cli/test_property_bad_input.py).

    CI (CI=true, as `.ci/run` sets it) runs the same examples every time (derandomized, no
    example database), so a red build is a change in the code, never a new draw. Elsewhere the
    draws are random, so each developer's `make test` explores new inputs, and Hypothesis replays
    a failure from its database (.hypothesis/, git-ignored) until it is fixed.
    """
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.register_profile("dev", print_blob=True)
    settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc with DICOMweb on free localhost ports, for the whole session (see tests/orthanc_server.py)."""
    from tests.helpers.orthanc_server import running_orthanc

    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
