"""`ct models import-book` / `ct models info`: the book's weights through the CLI, and bad checkpoints."""

import json
import os
import pickle
import re

import pytest
import torch

from ct_pipeline.errors import BadCheckpointError
from ct_pipeline.loading.fingerprint import sha256_of_file
from ct_pipeline.models import build_model, load_checkpoint, save_checkpoint
from tests.helpers.cli_process import run_ct

SEG_STATE = "seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS_STATE = "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"


@pytest.fixture(scope="module")
def imported(book_weights_dir, tmp_path_factory):
    """Both book checkpoints converted through the CLI: {"seg": path, "cls": path}."""
    out = tmp_path_factory.mktemp("imported")
    paths = {}
    for kind, name in (("seg", SEG_STATE), ("cls", CLS_STATE)):
        paths[kind] = out / f"{kind}.ckpt"
        args = ["models", "import-book", str(book_weights_dir / name), "--kind", kind, "-o", str(paths[kind])]
        result = run_ct(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"wrote {paths[kind]}: ")
    return paths


def test_imported_checkpoints_hold_the_books_weights_bit_for_bit(imported, book_weights_dir):
    # With the same weights, the outputs are those of tests/models/test_networks.py, which checks
    # them against the book's reference outputs (once, with tolerances that hold on any CPU).
    for kind, name in (("seg", SEG_STATE), ("cls", CLS_STATE)):
        book = torch.load(book_weights_dir / name, weights_only=True, map_location="cpu")["model_state"]
        ours = build_model(load_checkpoint(imported[kind], expected_kind=kind)).state_dict()
        assert set(ours) == set(book)
        for key, tensor in book.items():
            assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), key


def test_import_records_provenance(imported, book_weights_dir):
    checkpoint = load_checkpoint(imported["seg"])
    source = checkpoint.config["source"]
    assert source["file"] == SEG_STATE
    assert source["sha256"] == sha256_of_file(book_weights_dir / SEG_STATE)
    assert (source["model_name"], source["optimizer_name"]) == ("UNetWrapper", "Adam")
    assert (checkpoint.epoch, checkpoint.samples_seen) == (5, 1_500_000)
    assert checkpoint.optimizer_state is None
    assert checkpoint.model_config == {
        "in_channels": 7,
        "n_classes": 1,
        "depth": 3,
        "wf": 4,
        "padding": True,
        "batch_norm": True,
        "up_mode": "upconv",
    }


def test_info_json(imported):
    result = run_ct("models", "info", str(imported["cls"]), "--json", "--kind", "cls")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["kind"], summary["arch"], summary["epoch"]) == ("cls", "luna-classifier", 90)
    assert summary["parameter_count"] == 222_220
    assert summary["model_config"]["crop_shape_irc"] == [32, 48, 48]
    assert summary["metrics"] == {}


def test_info_table(imported):
    result = run_ct("models", "info", str(imported["seg"]), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"kind_name\s+│ segmentation", result.stdout)
    assert re.search(r"parameter_count\s+│ 118,271", result.stdout)
    assert re.search(r"config\.source\.optimizer_name\s+│ Adam", result.stdout)


def test_help_has_examples():
    for command in ("import-book", "info"):
        result = run_ct("models", command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, result.output


class _RunsShell:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _bad_file(tmp_path, imported, book_weights_dir, case):
    """Write the bad input for ``case``; return the `ct` arguments."""
    bad = tmp_path / "bad.ckpt"
    if case == "missing file":
        return ["models", "info", str(tmp_path / "nope.ckpt")]
    if case == "folder":
        return ["models", "info", str(tmp_path)]
    if case == "empty file":
        bad.write_bytes(b"")
    elif case == "not a torch file":
        bad.write_text("model_state = weights\n")
    elif case == "truncated":
        bad.write_bytes(imported["seg"].read_bytes()[:5000])
    elif case == "pickle with code":
        bad.write_bytes(pickle.dumps({"model_state": _RunsShell(tmp_path / "code-ran")}))
    elif case == "wrong kind":
        return ["models", "info", str(imported["cls"]), "--kind", "seg"]
    elif case == "shapes do not fit":
        payload = torch.load(imported["seg"], weights_only=True)
        payload["model_config"]["wf"] = 5  # a config edited after training: 32/64/128 channels
        torch.save(payload, bad)
    elif case == "book checkpoint":
        return ["models", "info", str(book_weights_dir / SEG_STATE)]
    elif case == "plain torch file":
        torch.save({"weights": torch.zeros(3)}, bad)
    elif case == "import: wrong kind":
        return ["models", "import-book", str(book_weights_dir / CLS_STATE), "--kind", "seg", "-o", str(bad)]
    elif case == "import: output exists":
        bad.write_bytes(b"keep me")
        return ["models", "import-book", str(book_weights_dir / CLS_STATE), "--kind", "cls", "-o", str(bad)]
    elif case == "import: project checkpoint":
        return ["models", "import-book", str(imported["cls"]), "--kind", "cls", "-o", str(bad)]
    else:
        raise AssertionError(case)
    return ["models", "info", str(bad)]


BAD_CASES = {
    "missing file": r"^error: checkpoint .*nope\.ckpt does not exist; check the path",
    "folder": r"^error: checkpoint .* is a folder, not a file;",
    "empty file": r"^error: checkpoint .*bad\.ckpt is empty \(0 bytes\);",
    "not a torch file": r"^error: .*bad\.ckpt is not a PyTorch checkpoint file; give a file written by `ct train`",
    "truncated": r"^error: .*bad\.ckpt is not a readable PyTorch checkpoint \(damaged, truncated",
    "pickle with code": r"^error: .*bad\.ckpt holds pickled Python code \((posix|os|nt)\.system\) that would run on "
    r"loading, so it is refused for safety;",
    "wrong kind": r"^error: .*cls\.ckpt is a nodule classifier checkpoint \(kind 'cls'\), "
    r"but `ct models info --kind seg` needs a segmentation checkpoint \(kind 'seg'\); "
    r"pass a segmentation checkpoint instead\.$",
    "shapes do not fit": r"^error: .*bad\.ckpt does not fit the unet-wrapper model its configuration describes: "
    r"unet\.down_path\.0\.block\.0\.weight has shape \(16, 7, 3, 3\) in the file but \(32, 7, 3, 3\) in the model "
    r"\(and \d+ more mismatches\);",
    "book checkpoint": r"^error: .*seg_2020.*\.state is a checkpoint from the book's code "
    r"\(model_name 'UNetWrapper'\), not a ct-pipeline checkpoint; "
    r"convert it with `ct models import-book .*\.state --kind seg -o .*\.ckpt`",
    "plain torch file": r"^error: .*bad\.ckpt is a PyTorch file but not a ct-pipeline checkpoint",
    "import: wrong kind": r"^error: .*cls_2020.*\.state holds the book's 'LunaModel', but --kind seg needs its "
    r"'UNetWrapper'; pass --kind cls for this file\.$",
    "import: output exists": r"^error: .*bad\.ckpt already exists; choose another output path or pass --force\.$",
    "import: project checkpoint": r"^error: .*cls\.ckpt is already a ct-pipeline checkpoint; use it directly\.$",
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_checkpoint_exits_2_with_one_line(tmp_path, imported, book_weights_dir, case):
    result = run_ct(*_bad_file(tmp_path, imported, book_weights_dir, case))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(BAD_CASES[case], lines[0]), lines[0]
    assert "Traceback" not in result.output


def test_pickle_with_code_is_not_executed(tmp_path, imported, book_weights_dir):
    marker = tmp_path / "code-ran"
    args = _bad_file(tmp_path, imported, book_weights_dir, "pickle with code")
    result = run_ct(*args)
    assert result.exit_code == 2 and "refused for safety" in result.stderr
    assert not marker.exists()
    with pytest.raises(BadCheckpointError, match="refused for safety"):
        load_checkpoint(args[-1])
    assert not marker.exists()
    # Control: the same bytes, unpickled without the safeguard, do run the command.
    pickle.loads((tmp_path / "bad.ckpt").read_bytes())
    assert marker.exists()


def test_import_force_overwrites_and_output_loads(tmp_path, book_weights_dir):
    out = tmp_path / "cls.ckpt"
    out.write_bytes(b"old")
    args = ["models", "import-book", str(book_weights_dir / CLS_STATE), "--kind", "mal", "-o", str(out), "--force"]
    result = run_ct(*args)
    assert result.exit_code == 0, result.output
    assert "malignancy classifier (luna-classifier), epoch 90, 4,500,000 samples seen" in result.stdout
    assert load_checkpoint(out, expected_kind="mal").kind == "mal"


def test_saved_checkpoint_is_reported_by_info(tmp_path, imported):
    model = build_model(load_checkpoint(imported["cls"]))
    path = save_checkpoint(
        tmp_path / "trained.ckpt", model, kind="cls", epoch=7, samples_seen=70, metrics={"auc": 0.91}
    )
    result = run_ct("models", "info", str(path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["epoch"], summary["samples_seen"], summary["metrics"]) == (7, 70, {"auc": 0.91})
