import pytest

from ct_pipeline.errors import BadInputError
from ct_pipeline.paths import filesystem_type, network_filesystem_warning, resolve_data_roots, validate_series_uid

MOUNTS = """\
/dev/vda / ext4 rw 0 0
server:/export /mnt/shared nfs4 rw 0 0
/dev/vdb /mnt/shared/local xfs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/mnt/shared/cache", "nfs4"),
        ("/mnt/shared/local/cache", "xfs"),
        ("/home/user/cache", "ext4"),
        ("/tmp/x/y", "tmpfs"),
    ],
)
def test_filesystem_type_picks_the_longest_mount_point(tmp_path, path, expected):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert filesystem_type(path, mounts) == expected


def test_network_cache_dir_is_warned_about(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    warning = network_filesystem_warning("/mnt/shared/ct-cache", mounts)
    assert "nfs4 file system" in warning and "CT_CACHE_DIR=$TMPDIR/ct-cache" in warning
    assert network_filesystem_warning("/mnt/shared/local/ct-cache", mounts) is None


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.1", "0", "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"]
)
def test_valid_uids_pass(uid):
    assert validate_series_uid(uid) == uid


@pytest.mark.parametrize("uid", ["", "1..2", "1.02", "a.b", "1.2/3", "../1", "1.2.", "1" * 65])
def test_invalid_uids_are_refused(uid):
    with pytest.raises(BadInputError):
        validate_series_uid(uid)


def test_data_roots_from_environment(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("CT_DATA_ROOT", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert resolve_data_roots(None) == [tmp_path / "a", tmp_path / "b"]
    assert resolve_data_roots([tmp_path / "b"]) == [tmp_path / "b"]
