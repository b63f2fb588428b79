"""Issue 26: an .mhd whose ElementDataFile is not `<uid>.raw` reads the same in every command.

`ct info` and `ct diagnose` read the file the header names; `ct prepcache` (and training, which
fills the cache the same way) used to look for `<uid>.raw` instead and failed.
"""

from __future__ import annotations

import numpy as np

from ct_pipeline.cache import CropCache, RegionSpec
from ct_pipeline.catalog import open_catalog
from ct_pipeline.prepcache import key_for
from tests.helpers.cli_process import run_ct
from tests.helpers.folder_digest import tree_digest
from tests.helpers.tiny_luna import SERIES, coded_volume, write_tiny_luna


def _rename_data_file(root, uid, name):
    """Move ``uid``'s voxels to ``subset0/<name>`` and point its header there (as some converters write)."""
    header = root / "subset0" / f"{uid}.mhd"
    (root / "subset0" / f"{uid}.raw").rename(root / "subset0" / name)
    header.write_text(header.read_text().replace(f"ElementDataFile = {uid}.raw", f"ElementDataFile = {name}"))
    return header


def test_prepcache_reads_the_data_file_the_header_names(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    header = _rename_data_file(root, SERIES[1], "volume_data.raw")
    data_before = tree_digest(root)
    cache_dir = tmp_path / "cache"
    result = run_ct("prepcache", "--data-root", root, "--cache-dir", cache_dir)
    assert result.exit_code == 0, result.output
    assert "3 filled, 0 already cached" in " ".join(result.stdout.split())
    assert tree_digest(root) == data_before  # the data root is only read
    catalog = open_catalog([root], cache_dir)
    cache = CropCache(cache_dir)
    try:
        region = cache.get(key_for(catalog.entries[SERIES[1]], catalog.candidates_of(SERIES[1]), RegionSpec()))
        assert region is not None
        assert np.array_equal(region.crop((20, 32, 32), (4, 6, 6)), coded_volume(1)[18:22, 29:35, 29:35])
    finally:
        cache.close()
    info = run_ct("info", header, "--json")  # the same file, the same reader
    assert info.exit_code == 0, info.output


def test_the_cache_key_follows_the_named_data_file(tmp_path):
    root = write_tiny_luna(tmp_path / "luna")
    header = _rename_data_file(root, SERIES[0], "volume_data.raw")
    from ct_pipeline.loading.mhd import mhd_data_files

    assert mhd_data_files(header) == [header, root / "subset0" / "volume_data.raw"]
    catalog = open_catalog([root], tmp_path / "cache")
    entry, candidates = catalog.entries[SERIES[0]], catalog.candidates_of(SERIES[0])
    before = key_for(entry, candidates, RegionSpec())
    data = root / "subset0" / "volume_data.raw"
    data.write_bytes(data.read_bytes()[::-1])  # same size, other voxels
    assert key_for(entry, candidates, RegionSpec()) != before
