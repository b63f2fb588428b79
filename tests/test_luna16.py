import pandas as pd
import pytest

from ct_pipeline.errors import BadDataError
from ct_pipeline.luna16 import Luna16Tables, build_candidate_table, read_annotations, split_series

UID_A = "1.2.840.1"
UID_B = "1.2.840.2"


def test_real_luna16_annotations_parse_with_malignancy(luna16_tables_dir):
    tables = Luna16Tables(
        candidates=None,
        annotations=luna16_tables_dir / "annotations.csv",
        malignancy=luna16_tables_dir / "annotations_with_malignancy.csv",
    )
    table = build_candidate_table(tables)
    assert len(table) == 1186
    assert table["series_uid"].nunique() == 601
    assert table["is_nodule"].all() and table["has_annotation"].all()
    # 1182 rows of the malignancy table all find their annotation; 4 nodules stay unknown.
    assert int(table["is_malignant"].sum()) == 378
    assert int((~table["is_malignant"]).sum()) == 804
    assert int(table["is_malignant"].isna().sum()) == 4
    assert table["diameter_mm"].between(3.2, 32.3).all()


def _write(path, text):
    path.write_text(text)
    return path


def test_candidates_and_annotations_join_into_one_table(tmp_path):
    _write(tmp_path / "annotations.csv", f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID_A},1,2,3,6.5\n")
    _write(
        tmp_path / "candidates.csv",
        f"seriesuid,coordX,coordY,coordZ,class\n{UID_A},1.1,2,3,1\n{UID_A},50,60,70,0\n{UID_B},-5,-6,-7,0\n",
    )
    _write(
        tmp_path / "annotations_with_malignancy.csv",
        f"seriesuid,coordX,coordY,coordZ,diameter_mm,mal_bool\n{UID_A},1.0000001,2,3,6.5,True\n",
    )
    table = build_candidate_table(Luna16Tables.in_folder(tmp_path))
    # the class-1 candidate is the annotated nodule again and is dropped
    assert table[["series_uid", "center_x_mm", "diameter_mm", "is_nodule"]].values.tolist() == [
        [UID_A, 1.0, 6.5, True],
        [UID_A, 50.0, 0.0, False],
        [UID_B, -5.0, 0.0, False],
    ]
    assert table["is_malignant"].tolist()[0] is True
    assert pd.isna(table["is_malignant"].iloc[1])


@pytest.mark.parametrize(
    "row, message",
    [
        (f"{UID_A},1,2,oops,5", r"annotations.csv:3: coordZ = 'oops' is not a finite number"),
        (f"{UID_A},1,nan,3,5", r"annotations.csv:3: coordY = 'nan' is not a finite number"),
        (f"{UID_A},inf,2,3,5", r"annotations.csv:3: coordX = 'inf' is not a finite number"),
        (f"{UID_A},1,2,3", r"annotations.csv:3: diameter_mm = '' is not a finite number"),
        ("../../etc,1,2,3,5", r"annotations.csv:3: '../../etc' is not a valid series UID"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    path = _write(tmp_path / "annotations.csv", f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID_A},1,2,3,4\n{row}\n")
    with pytest.raises(BadDataError, match=message):
        read_annotations(path)


def test_missing_column_is_named(tmp_path):
    path = _write(tmp_path / "annotations.csv", f"seriesuid,coordX,coordY,diameter_mm\n{UID_A},1,2,4\n")
    with pytest.raises(BadDataError, match=r"missing column\(s\) \['coordZ'\]"):
        read_annotations(path)


def test_split_is_by_series_deterministic_and_disjoint():
    uids = [f"1.2.{i}" for i in range(25)]
    train, val = split_series(reversed(uids), val_stride=5)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(uids)
    assert len(val) == 5
    assert split_series(uids, val_stride=5) == (train, val)
    assert split_series(uids[:2], val_stride=10)[1] == ["1.2.0"]


def test_line_numbers_count_blank_lines_and_empty_file_is_bad_data(tmp_path):
    path = _write(
        tmp_path / "annotations.csv",
        f"seriesuid,coordX,coordY,coordZ,diameter_mm\n\n{UID_A},1,2,3,4\n\n{UID_A},x,2,3,4\n",
    )
    with pytest.raises(BadDataError, match=r"annotations.csv:5: coordX = 'x'"):
        read_annotations(path)
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(BadDataError, match="the file is empty"):
        read_annotations(empty)
