"""The crop cache: exact crops, padding at all six faces, invalidation, corruption, concurrency, resume."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ct_pipeline.cache import CropCache, RegionSpec
from ct_pipeline.prepcache import PrepcacheConfig, key_for, prepcache
from tests.helpers.tiny_luna import SERIES, SHAPE_IRC, coded_volume


def _region(catalog, cache, uid):
    key = key_for(catalog.entries[uid], catalog.candidates_of(uid), RegionSpec())
    return key, cache.get(key)


def test_catalog_joins_series_and_candidates(tiny):
    _, catalog, _ = tiny
    assert catalog.series_uids == SERIES
    # class-1 candidates are replaced by the annotation; 3 nodules + 2+3+2 non-nodules
    assert len(catalog.candidates) == 10
    assert catalog.candidates["is_nodule"].sum() == 3
    assert catalog.split(val_stride=3) == (SERIES[1:], SERIES[:1])


def test_cached_crops_equal_crops_of_the_raw_volume(tiny):
    _, catalog, cache = tiny
    results = prepcache(catalog, cache, PrepcacheConfig())
    assert [r.filled for r in results] == [True, True, True]
    for n, uid in enumerate(SERIES):
        _, region = _region(catalog, cache, uid)
        full = coded_volume(n)
        assert region.hu.dtype == np.int16
        assert region.crop((20, 32, 32), (32, 48, 48)).tolist() == full[4:36, 8:56, 8:56].tolist()
    # a second run reads nothing again
    assert [r.filled for r in prepcache(catalog, cache, PrepcacheConfig())] == [False, False, False]


@pytest.mark.parametrize(
    "center, face",
    [
        ((0, 32, 32), "index-low"),
        ((39, 32, 32), "index-high"),
        ((20, 0, 32), "row-low"),
        ((20, 63, 32), "row-high"),
        ((20, 32, 0), "col-low"),
        ((20, 32, 63), "col-high"),
    ],
)
def test_crops_past_each_face_are_padded_with_air_and_stay_centred(tiny, center, face):
    _, catalog, cache = tiny
    prepcache(catalog, cache, PrepcacheConfig(series=(SERIES[0],)))
    key, region = _region(catalog, cache, SERIES[0])
    full = coded_volume(0)
    crop = region.crop(center, (32, 48, 48))
    assert crop.shape == (32, 48, 48)
    padded = np.pad(full, ((16, 16), (24, 24), (24, 24)), constant_values=-1000)
    i, r, c = center
    # the region only keeps what candidates need; compare where the region has data
    expected = padded[i : i + 32, r : r + 48, c : c + 48]
    stored = np.zeros(SHAPE_IRC, bool)
    o = region.origin_irc
    s = region.hu.shape
    stored[o[0] : o[0] + s[0], o[1] : o[1] + s[1], o[2] : o[2] + s[2]] = True
    stored = np.pad(stored, ((16, 16), (24, 24), (24, 24)), constant_values=True)[i : i + 32, r : r + 48, c : c + 48]
    assert np.array_equal(crop[stored], expected[stored])
    assert (crop[~stored] == -1000).all()
    axis = {"index": 0, "row": 1, "col": 2}[face.split("-")[0]]
    edge = [slice(None)] * 3
    edge[axis] = 0 if face.endswith("low") else -1
    assert (crop[tuple(edge)] == -1000).all(), "the slab beyond the face is air"
    assert crop[16, 24, 24] == full[center], "the centre voxel is the candidate's voxel"


def test_changed_source_file_gives_a_new_key_and_fresh_data(tiny):
    root, catalog, cache = tiny
    prepcache(catalog, cache, PrepcacheConfig(series=(SERIES[0],)))
    old_key, _ = _region(catalog, cache, SERIES[0])
    raw = root / "subset0" / f"{SERIES[0]}.raw"
    data = np.fromfile(raw, dtype="<i2") + 1
    time.sleep(0.01)
    data.tofile(raw)
    os.utime(raw, ns=(time.time_ns(), time.time_ns() + 10**9))
    new_key = key_for(catalog.entries[SERIES[0]], catalog.candidates_of(SERIES[0]), RegionSpec())
    assert new_key != old_key
    assert cache.get(new_key) is None
    prepcache(catalog, cache, PrepcacheConfig(series=(SERIES[0],)))
    assert cache.get(new_key).crop((20, 32, 32), (1, 1, 1))[0, 0, 0] == coded_volume(0)[20, 32, 32] + 1


def test_changed_crop_spec_gives_a_new_key(tiny):
    _, catalog, _ = tiny
    entry, cands = catalog.entries[SERIES[0]], catalog.candidates_of(SERIES[0])
    assert key_for(entry, cands, RegionSpec()) != key_for(entry, cands, RegionSpec(crop_irc=(16, 48, 48)))


def test_corrupt_entry_is_detected_logged_deleted_and_recomputed(tiny, caplog):
    _, catalog, cache = tiny
    prepcache(catalog, cache, PrepcacheConfig(series=(SERIES[1],)))
    key, _ = _region(catalog, cache, SERIES[1])
    path = cache.data_path(key)
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF  # one flipped byte in the pixel data
    path.write_bytes(bytes(blob))
    fresh = CropCache(cache.directory.parent)  # a new process's view: nothing verified yet
    with caplog.at_level("WARNING"):
        assert fresh.get(key) is None
    assert "corrupt (checksum mismatch)" in caplog.text
    assert not fresh.contains(key)
    results = prepcache(catalog, fresh, PrepcacheConfig(series=(SERIES[1],)))
    assert results[0].filled
    assert np.array_equal(fresh.get(key).crop((20, 32, 32), (2, 2, 2)), coded_volume(1)[19:21, 31:33, 31:33])
    fresh.close()


def test_truncated_entry_is_recomputed(tiny):
    _, catalog, cache = tiny
    prepcache(catalog, cache, PrepcacheConfig(series=(SERIES[2],)))
    key, _ = _region(catalog, cache, SERIES[2])
    path = cache.data_path(key)
    path.write_bytes(path.read_bytes()[:1000])
    fresh = CropCache(cache.directory.parent)
    assert fresh.get(key) is None
    fresh.close()


def test_an_entry_replaced_while_it_is_read_is_read_again_not_deleted(tiny, caplog):
    # Two DataLoader workers (or ranks) filling the same series: diskcache swaps the data file
    # between one reader's look-up and its open, and answers None. Not corruption.
    _, catalog, cache = tiny
    prepcache(catalog, cache, PrepcacheConfig(series=(SERIES[0],)))
    key, _ = _region(catalog, cache, SERIES[0])
    reader = CropCache(cache.directory.parent)
    real_get, vanished = reader.store.get, []

    def get_while_replaced(name, *args, **kwargs):
        if name.startswith("data|") and len(vanished) < 2:
            vanished.append(name)
            return None
        return real_get(name, *args, **kwargs)

    reader.store.get = get_while_replaced
    with caplog.at_level("WARNING"):
        region = reader.get(key)
    assert len(vanished) == 2 and region is not None
    assert np.array_equal(region.crop((20, 32, 32), (2, 2, 2)), coded_volume(0)[19:21, 31:33, 31:33])
    assert "corrupt" not in caplog.text and cache.contains(key)
    reader.close()


def _prepcache_cli(root, cache_dir, *extra):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "prepcache", "--data-root", str(root), "--cache-dir", str(cache_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_two_processes_filling_the_same_cache_at_once(tiny, tmp_path):
    root, catalog, _ = tiny
    cache_dir = tmp_path / "shared-cache"
    procs = [_prepcache_cli(root, cache_dir) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all("error" not in err.lower() for _, err in outputs), outputs
    cache = CropCache(cache_dir)
    stats = cache.stats()
    assert (stats["regions"], stats["series"]) == (3, 3)  # one entry per series, no duplicates
    data_files = [p for p in (cache_dir / "crops").rglob("*.val")]
    assert len(data_files) == 3, "no orphaned region files left behind"
    for n, uid in enumerate(SERIES):
        key, region = _region(catalog, cache, uid)
        assert region.crop((20, 32, 32), (1, 1, 1))[0, 0, 0] == coded_volume(n)[20, 32, 32]
    cache.close()


@pytest.mark.slow
def test_killed_prepcache_resumes_without_redoing_work(tiny, tmp_path):
    root, catalog, _ = tiny
    cache_dir = tmp_path / "resume-cache"
    # the first run fills one series and is then killed (simulated by selecting one series)
    first = _prepcache_cli(root, cache_dir, "--series", SERIES[0])
    first.communicate(timeout=60)
    # a run killed hard in the middle of a write leaves at most a temp file, never an entry
    victim = _prepcache_cli(root, cache_dir)
    time.sleep(0.8)
    victim.kill()
    victim.communicate()
    cache = CropCache(cache_dir)
    done_before = {
        uid for uid in SERIES if cache.contains(key_for(catalog.entries[uid], catalog.candidates_of(uid), RegionSpec()))
    }
    assert SERIES[0] in done_before
    results = prepcache(catalog, cache, PrepcacheConfig())
    assert {r.series_uid for r in results if r.filled} == set(SERIES) - done_before
    for n, uid in enumerate(SERIES):
        _, region = _region(catalog, cache, uid)
        assert region is not None
        assert region.crop((20, 32, 32), (1, 1, 1))[0, 0, 0] == coded_volume(n)[20, 32, 32]
    cache.close()


def test_shards_are_disjoint_and_cover_every_series(tiny):
    from ct_pipeline.sharding import Shard

    _, catalog, _ = tiny
    picked = [Shard(k, 2).select(catalog.series_uids) for k in range(2)]
    assert sorted(picked[0] + picked[1]) == SERIES
    assert set(picked[0]).isdisjoint(picked[1])


def test_a_mm_region_holds_the_native_voxels_its_crops_read_in_each_series():
    """A 32x48x48 crop at 1.25 x 0.7 x 0.7 mm reads 16 native slices of 2.5 mm, 50 of 0.8 mm: the
    region is sized per series, native keys are left as they were."""
    from ct_pipeline.cache import region_box

    spec = RegionSpec(crop_spacing_mm=(1.25, 0.7, 0.7))
    center = np.array([[150, 200, 200]])
    # the sampled span (31 steps of 0.5 or 1.5625 slices, 47 of one pixel), one voxel for the
    # rounded centre, the interpolation's far neighbour and two spare voxels on each side
    for native, (depth, side) in (((2.5, 0.7, 0.7), (22, 54)), ((0.8, 0.7, 0.7), (55, 54))):
        start, stop = region_box((300, 400, 400), center, np.array([False]), spec, native)
        assert (stop - start).tolist() == [depth, side, side], native
    start, stop = region_box((300, 400, 400), center, np.array([False]), RegionSpec(), (2.5, 0.7, 0.7))
    assert start.tolist() == [134, 176, 176] and stop.tolist() == [166, 224, 224]
    assert RegionSpec().key() == "crop32x48x48-nm0x24x24"
    assert spec.key() == "crop32x48x48-nm0x24x24-mm1.25x0.7x0.7"
