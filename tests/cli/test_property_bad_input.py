"""Property: whatever a user feeds `ct`, it answers exit 0, or exit 2 with one line -- never a traceback.

Hypothesis generates malformed `.mhd` headers (and their data files), LUNA16 annotation,
candidate and findings tables, and option values (damaged DICOM files: test_property_bad_dicom.py),
and runs the commands that read them in process (typer's CliRunner, stderr captured on its own).
Every outcome must be:

* exit 0 (``--json`` output then parses as strict JSON: no NaN), or
* exit 2 with exactly one ``error: ...`` line on stderr (``WARNING:`` lines are allowed), or
* exit 2 from the command-line parser (the usage box the README's troubleshooting describes).

Exit 1 (an internal error), 3 or any other code fails the property. The number of examples is
bounded per test so that the module takes well under a minute; tests/conftest.py selects a
derandomized profile when CI=true.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from ct_pipeline.evaluation.tables import ANNOTATION_HEADER, PREDICTION_HEADER
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import write_models, write_phantom_luna
from tests.helpers.tiny_luna import SERIES, write_tiny_luna

UID = "1.2.826.0.1.3680043.8.498.7"
SIZE_XYZ = (6, 5, 4)  # the valid header's DimSize: 120 voxels, 240 bytes as MET_SHORT

# Hypothesis reruns a test body with one set of function-scoped fixtures (the autouse
# environment fixture of conftest is one): each example makes its own folder, so sharing is safe.
_SHARED_FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
CHEAP = settings(max_examples=30, deadline=None, suppress_health_check=_SHARED_FIXTURES)
# Commands that load torch models or write caches cost ~0.1-1 s a run: fewer examples, and a
# failure is reported as found instead of being shrunk over many more runs.
COSTLY = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=_SHARED_FIXTURES,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check_outcome(args: list[str], json_output: bool = False):
    """Run `ct ARGS` in process and assert the property; return the result."""
    result = run_ct(*args)
    shown = f"ct {' '.join(args)}\nexit {result.exit_code}\nstdout: {result.stdout[-800:]}\n"
    shown += f"stderr: {result.stderr[-1500:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n{shown}") from (
            result.exception
        )
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 2), shown
    if result.exit_code == 2:
        if result.stderr.startswith("Usage: "):  # the parser's own box: a usage mistake, documented in the README
            assert "Error" in result.stderr, shown
            return result
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("WARNING:")]
        assert len(lines) == 1 and lines[0].startswith("error: "), shown
    elif json_output:
        try:
            _strict_json(result.stdout)
        except ValueError as err:
            raise AssertionError(f"--json printed invalid JSON ({err})\n{shown}") from err
    return result


def _workdir(factory) -> Path:
    return Path(tempfile.mkdtemp(dir=factory.getbasetemp()))


_ODD_NUMBERS = ["-1", "-0.0", "0", "nan", "inf", "-inf", "1e9", "1e400", "99999999999999999999", "1.5", "x", ""]


@st.composite
def option_values(draw, accepted: dict[str, list[str]], odd: dict[str, list[str]]) -> list[str]:
    """Some options with values they accept, and in half the draws one with an odd value, as `ct` arguments.

    One odd value at a time: with several, the first the parser refuses would hide the others.
    """
    chosen = draw(st.lists(st.sampled_from(sorted(accepted)), unique=True, max_size=4))
    values = {option: draw(st.sampled_from(accepted[option])) for option in chosen}
    if draw(st.booleans()):
        option = draw(st.sampled_from(sorted(odd)))
        values[option] = draw(st.sampled_from(odd[option]))
    return [text for option, value in values.items() for text in (option, value)]


# -- .mhd headers ------------------------------------------------------------------------------
VALID_HEADER = [
    ("ObjectType", "Image"),
    ("NDims", "3"),
    ("BinaryData", "True"),
    ("BinaryDataByteOrderMSB", "False"),
    ("CompressedData", "False"),
    ("TransformMatrix", "1 0 0 0 1 0 0 0 1"),
    ("Offset", "-10 -20.5 30"),
    ("ElementSpacing", "0.7 0.7 2"),
    ("DimSize", " ".join(map(str, SIZE_XYZ))),
    ("ElementType", "MET_SHORT"),
    ("ElementDataFile", f"{UID}.raw"),
]
KEYS = [key for key, _ in VALID_HEADER] + [
    "ElementSize",
    "Origin",
    "Position",
    "Rotation",
    "Orientation",
    "ElementNumberOfChannels",
    "ElementByteOrderMSB",
    "HeaderSize",
]

_number_texts = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "-inf", "inf", "1e400", "-0", "0", "1e-320", "4096", "65536", "2147483648", "0x10", "1,5"]),
)
_values = st.one_of(
    st.lists(_number_texts, min_size=0, max_size=10).map(" ".join),
    st.sampled_from(
        [
            "MET_SHORT",
            "MET_FLOAT",
            "MET_DOUBLE",
            "MET_UCHAR",
            "MET_LONG",
            "MET_SHORT_ARRAY",
            "met_short",
            "",
            "True",
            "False",
            "true",
            "LOCAL",
            "LIST",
            "2",
            "3",
            "4",
            "Image",
        ]
    ),
    st.text(max_size=20),
)
_data_files = st.sampled_from(
    [
        f"{UID}.raw",
        "other.raw",
        "missing.raw",
        "",
        "LOCAL",
        "LIST",
        "folder",
        "short.raw",
        "../outside.raw",
        "slice%03d.raw 0 3 1",
        "a\0b.raw",
        "/dev/null",
        " ",
        "x" * 300 + ".raw",
        "ünïcode.raw",
    ]
)


@st.composite
def mhd_files(draw) -> tuple[bytes, int, int | None]:
    """An .mhd header (bytes, malformed in any way), and its data file's size and seed (None: zeros)."""
    lines = list(VALID_HEADER)
    for _ in range(draw(st.integers(0, 4))):
        action = draw(
            st.sampled_from(["drop", "duplicate", "replace", "element type", "data file", "add", "no equals sign"])
        )
        if action == "drop" and lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
        elif action == "duplicate" and lines:
            key, _ = lines[draw(st.integers(0, len(lines) - 1))]
            lines.insert(draw(st.integers(0, len(lines))), (key, draw(_values)))
        elif action == "replace" and lines:
            index = draw(st.integers(0, len(lines) - 1))
            lines[index] = (lines[index][0], draw(_values))
        elif action == "element type":
            lines = [(k, draw(_values) if k == "ElementType" else v) for k, v in lines]
        elif action == "data file":
            lines = [(k, draw(_data_files) if k == "ElementDataFile" else v) for k, v in lines]
        elif action == "add":
            lines.insert(draw(st.integers(0, len(lines))), (draw(st.sampled_from(KEYS)), draw(_values)))
        elif action == "no equals sign" and lines:
            index = draw(st.integers(0, len(lines) - 1))
            lines[index] = (f"{lines[index][0]} : {lines[index][1]}", None)
    separator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    equals = draw(st.sampled_from([" = ", "=", " =\t"]))
    text = separator.join(key if value is None else f"{key}{equals}{value}" for key, value in lines)
    data = text.encode("utf-8", errors="surrogatepass")
    # Most headers keep their bytes, so that the checks after parsing are reached too.
    damage = draw(
        st.sampled_from(["none"] * 6 + ["bom", "latin-1 byte", "binary tail", "truncated", "empty", "binary"])
    )
    if damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "latin-1 byte":
        data = data.replace(b"Image", b"Im\xe4ge", 1)
    elif damage == "binary tail":
        data += draw(st.binary(min_size=1, max_size=64))
    elif damage == "truncated":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "empty":
        data = b""
    elif damage == "binary":
        data = draw(st.binary(max_size=200))
    # Data file sizes that fit the valid header as several element types, or none; the bytes are
    # zeros or drawn from a seed (so that a failing example prints short).
    n_voxels = math.prod(SIZE_XYZ)
    size = draw(st.sampled_from([2 * n_voxels, 2 * n_voxels, n_voxels, 4 * n_voxels, 8 * n_voxels, 0, 100, 241]))
    return data, size, draw(st.none() | st.integers(0, 2**16))


def _write_mhd_case(folder: Path, header: bytes, raw_size: int, raw_seed: int | None) -> Path:
    """``folder/subset0/<UID>.mhd`` with its data files (``<UID>.raw``, ``other.raw``, a short one, a folder)."""
    subset = folder / "subset0"
    (subset / "folder").mkdir(parents=True)
    content = bytes(raw_size) if raw_seed is None else np.random.default_rng(raw_seed).bytes(raw_size)
    for name, data in ((f"{UID}.raw", content), ("other.raw", content), ("short.raw", content[:7])):
        (subset / name).write_bytes(data)
    path = subset / f"{UID}.mhd"
    path.write_bytes(header)
    return path


def _header(**values: str) -> bytes:
    return "\n".join(f"{key} = {values.get(key, value)}" for key, value in VALID_HEADER).encode("latin-1")


@CHEAP
@given(case=mhd_files())
# Cases found before (they run every time, whatever the draw):
@example(case=(_header(ElementDataFile="a\0b.raw"), 240, None))  # exit 1: embedded null byte
@example(case=(_header(DimSize="4294967296 4294967296 1"), 0, None))  # exit 1: 2**64 voxels wrapped to 0 bytes
@example(case=(_header(ElementType="MET_FLOAT"), 480, 1))  # NaN voxels: `ct info --json` printed NaN (#26)
def test_info_of_any_mhd_header_is_clean(tmp_path_factory, case):
    folder = _workdir(tmp_path_factory)
    path = _write_mhd_case(folder, *case)
    check_outcome(["info", str(path)])
    check_outcome(["info", UID, "--data-root", str(folder), "--json"], json_output=True)
    check_outcome(["series", "list", "--data-root", str(folder), "--json"], json_output=True)


# -- tables ------------------------------------------------------------------------------------
FINDINGS = PREDICTION_HEADER.split(",")
DIAMETERS = ("6.0", "12", "3.5", "0.99")
ANNOTATIONS = ANNOTATION_HEADER.split(",")
CANDIDATES = ["seriesuid", "coordX", "coordY", "coordZ", "class"]

_cells = st.one_of(
    st.sampled_from(
        SERIES[:2]
        + [
            UID,
            "",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "-7",
            "0",
            "1",
            "0.5",
            "1.5",
            "-0.2",
            "1e308",
            "1e400",
            "True",
            "abc",
            " 3 ",
            '"1,2"',
            "../../etc",
            "\u00e9",
            "1;2",
        ]
    ),
    st.floats(-1e6, 1e6).map(repr),
    st.integers(-5, 5).map(str),
    st.text(max_size=8),
)


@st.composite
def csv_tables(draw, columns: list[str], last_values: tuple[str, ...] = ("0", "1", "0.5", "0.99")) -> bytes:
    """A CSV with ``columns`` as header, damaged: columns renamed/missing/extra, odd cells, duplicate rows, BOM/CRLF.

    ``last_values`` are the well-formed rows' values of the last column.
    """
    header = list(columns)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # mostly the right header, so that rows are read
        action = draw(st.sampled_from(["drop", "rename", "extra", "swap", "upper"]))
        index = draw(st.integers(0, len(header) - 1)) if header else 0
        if action == "drop" and header:
            del header[index]
        elif action == "rename" and header:
            header[index] = draw(st.sampled_from(["", "coordx", "diameter", "prob", "seriesuid", " coordX"]))
        elif action == "extra":
            header.insert(index, draw(st.sampled_from(["note", "class", "probability", "coordX"])))
        elif action == "swap" and len(header) > 1:
            header[0], header[-1] = header[-1], header[0]
        elif action == "upper" and header:
            header[index] = header[index].upper()
    valid_row = st.tuples(
        st.sampled_from(SERIES[:2]),
        *[st.floats(-200, 200).map(lambda v: f"{v:.2f}")] * (len(columns) - 2),
        st.sampled_from(last_values),
    ).map(list)
    odd_row = st.lists(_cells, min_size=0, max_size=len(header) + 2)
    # Half the tables have only well-formed rows, so that the commands get past reading them.
    rows = draw(st.lists(st.one_of(valid_row, odd_row) if draw(st.booleans()) else valid_row, min_size=1, max_size=6))
    if rows and draw(st.booleans()):
        rows.append(list(draw(st.sampled_from(rows))))  # a duplicate row
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(",".join(row) for row in [header, *rows]) + draw(st.sampled_from(["", newline]))
    data = text.encode("utf-8", errors="surrogatepass")
    damage = draw(st.sampled_from(["none"] * 8 + ["bom", "empty", "header only", "latin-1", "binary"]))
    if damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "empty":
        data = b""
    elif damage == "header only":
        data = ",".join(header).encode()
    elif damage == "latin-1":
        data += b"\n" + SERIES[0].encode() + b",1,2,3,\xe9"
    elif damage == "binary":
        data = draw(st.binary(max_size=120))
    return data


EVALUATE_ACCEPTED = {"--bootstrap": ["0", "3"], "--max-per-scan": ["100", "0", "1"], "--seed": ["0", "7"]}
EVALUATE_ODD = {
    "--bootstrap": ["-1", "nan", "1.5", "x"],
    "--max-per-scan": ["-1", "1e3", "99999999999999999999"],
    "--seed": ["-1", "4294967296", "-99999999999999999999", "1.5"],
}


@CHEAP
@given(
    findings=csv_tables(FINDINGS),
    annotations=csv_tables(ANNOTATIONS, DIAMETERS),
    excluded=st.none() | csv_tables(ANNOTATIONS, ("-1", "10")),
    series_file=st.none() | st.lists(st.sampled_from([*SERIES, "", "x", "# c", "1.2,3"]), max_size=4).map("\n".join),
    options=option_values(EVALUATE_ACCEPTED, EVALUATE_ODD),
    by_size=st.booleans(),
)
def test_evaluate_of_any_tables_is_clean(
    tmp_path_factory, findings, annotations, excluded, series_file, options, by_size
):
    folder = _workdir(tmp_path_factory)
    (folder / "pred.csv").write_bytes(findings)
    (folder / "annotations.csv").write_bytes(annotations)
    # No bootstrap unless drawn: its default 1000 resamples would dominate the run time.
    args = [
        "evaluate",
        str(folder / "pred.csv"),
        "--annotations",
        str(folder / "annotations.csv"),
        "--json",
        "--bootstrap",
        "0",
        *options,
    ]
    if excluded is not None:
        (folder / "excluded.csv").write_bytes(excluded)
        args += ["--excluded", str(folder / "excluded.csv")]
    if series_file is not None:
        (folder / "series.csv").write_text(series_file)
        args += ["--series-file", str(folder / "series.csv")]
    check_outcome(args + (["--by-size"] if by_size else []), json_output=True)


@pytest.fixture(scope="module")
def tiny_luna_template(tmp_path_factory) -> Path:
    return write_tiny_luna(tmp_path_factory.mktemp("tiny-luna"))


@COSTLY
@given(
    table=st.sampled_from(["candidates.csv", "annotations.csv", "annotations_with_malignancy.csv"]),
    content=st.one_of(
        csv_tables(CANDIDATES, ("0", "1")),
        csv_tables(ANNOTATIONS, DIAMETERS),
        csv_tables([*ANNOTATIONS, "mal_bool"], ("True", "False")),
    ),
)
def test_prepcache_of_any_luna_table_is_clean(tmp_path_factory, tiny_luna_template, table, content):
    folder = _workdir(tmp_path_factory)
    root = Path(shutil.copytree(tiny_luna_template, folder / "luna"))
    (root / table).write_bytes(content)
    check_outcome(["prepcache", "--data-root", str(root), "--cache-dir", str(folder / "cache")])


# -- option values -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def diagnose_inputs(tmp_path_factory) -> dict[str, Path]:
    """A phantom chest under ``root`` and threshold/constant models (tests.helpers.diagnosis_tiny)."""
    folder = tmp_path_factory.mktemp("diagnose-inputs")
    uid = write_phantom_luna(folder / "luna", 1)[0]
    return {"root": folder / "luna", "uid": Path(uid), **write_models(folder / "models")}


DIAGNOSE_ACCEPTED = {
    "--threshold": ["0", "0.3", "1"],
    "--seg-threshold": ["0", "0.5", "1"],
    "--merge-fraction": ["0", "0.75", "3"],
    "--lung-margin": ["0", "15", "100"],
    "--batch-size": ["1", "7"],
    "--cls-batch-size": ["1", "64"],
    "--tta": ["1", "2", "8"],
    "--concurrent-batches": ["1", "2"],
    "--threads": ["1", "2"],
    "--device": ["cpu", "auto"],
    "--precision": ["auto", "fp32"],
    "--csv": ["new/findings.csv"],
}
DIAGNOSE_ODD = {
    **{option: _ODD_NUMBERS for option in ("--threshold", "--seg-threshold", "--merge-fraction", "--lung-margin")},
    **{option: _ODD_NUMBERS for option in ("--batch-size", "--cls-batch-size", "--concurrent-batches", "--tta")},
    # Threads stay few: thousands would start thousands of threads in the test process (the
    # runtime item of #26 caps them; a subprocess test covers it there).
    "--threads": ["0", "-1", "x", "1.5"],
    "--device": ["cuda", "cuda:1", "CPU", "tpu", "", "mps", "cpu:0"],
    "--precision": ["bf16", "fp16", "fp8", ""],
    "--csv": ["folder", "", ".", "folder/sub/../x.csv"],
}


@COSTLY
@given(options=option_values(DIAGNOSE_ACCEPTED, DIAGNOSE_ODD), lung_mask=st.booleans())
def test_diagnose_of_any_option_values_is_clean(tmp_path_factory, diagnose_inputs, options, lung_mask):
    folder = _workdir(tmp_path_factory)
    (folder / "folder").mkdir()
    args = [
        "diagnose",
        str(diagnose_inputs["uid"]),
        "--data-root",
        str(diagnose_inputs["root"]),
        "--quiet",
        "--json",
        "--seg-model",
        str(diagnose_inputs["seg"]),
        "--cls-model",
        str(diagnose_inputs["cls"]),
    ]
    for option, value in zip(options[::2], options[1::2]):
        args += [option, str(folder / value) if option == "--csv" and value else value]
    check_outcome(args + ([] if lung_mask else ["--no-lung-mask"]), json_output=True)


TRAIN_ACCEPTED = {
    "--epochs": ["1", "3"],
    "--epoch-size": ["8", "100"],
    "--batch-size": ["1", "4"],
    "--val-every": ["1", "2"],
    "--val-stride": ["2", "10"],
    "--seed": ["0", "7"],
    "--lr": ["0.001", "0.1"],
    "--momentum": ["0", "0.9"],
    "--weight-decay": ["0", "0.0001"],
    "--aug-shift": ["0", "0.1"],
    "--aug-scale": ["0", "0.2"],
    "--aug-rotate": ["0", "90"],
    "--aug-noise": ["0", "25"],
    "--workers": ["0", "1"],
    "--threads": ["1", "2"],
    "--device": ["cpu", "auto"],
    "--precision": ["auto", "fp32"],
}
TRAIN_ODD = {
    **{option: _ODD_NUMBERS for option in TRAIN_ACCEPTED if option not in ("--threads", "--device", "--precision")},
    "--seed": ["-1", "4294967296", "99999999999999999999", "x"],
    "--threads": ["0", "-1", "x"],
    "--device": ["cuda", "tpu", "", "mps"],
    "--precision": ["bf16", "fp16", "fp8"],
}


@COSTLY
@given(task=st.sampled_from(["train-cls", "train-seg"]), options=option_values(TRAIN_ACCEPTED, TRAIN_ODD))
def test_training_of_any_option_values_is_clean(tmp_path_factory, task, options):
    """Option checks only: the data root holds no series, so a run that passes them stops there (exit 2)."""
    folder = _workdir(tmp_path_factory)
    (folder / "data").mkdir()
    check_outcome([task, "--data-root", str(folder / "data"), "--out", str(folder / "run"), *options])
