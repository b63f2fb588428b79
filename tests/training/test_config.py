"""TrainConfig: per-task defaults, validation with one-line messages, and the device/precision choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ct_pipeline.datasets import AugmentationConfig
from ct_pipeline.devices import cpu_runs_bf16_inference, resolve_device, resolve_precision
from ct_pipeline.errors import BadInputError
from ct_pipeline.training import (
    ClassificationTraining,
    MalignancyTraining,
    SegmentationTraining,
    TrainConfig,
)
from ct_pipeline.training.distributed import setup_distributed
from ct_pipeline.training.tasks import ClassifierTask, SegmentationTask, make_task
from tests.helpers.cli_process import run_ct

ROOTS = (Path("/data"),)


def test_task_defaults_are_the_books():
    cls = TrainConfig.for_task("cls", data_roots=ROOTS, out_dir=Path("runs/a"))
    assert (cls.optimizer, cls.lr, cls.momentum, cls.batch_size, cls.epoch_size) == ("sgd", 1e-3, 0.99, 32, 20_000)
    assert cls.classification == ClassificationTraining(balance_ratio=1.0, block_batchnorm=False, centre_head=False)
    assert cls.augmentation == AugmentationConfig() and cls.run_name == "a" and cls.kind == "cls" and cls.epochs == 10
    mal = TrainConfig.for_task("mal", data_roots=ROOTS, out_dir=Path("runs/b"))
    assert (mal.lr, mal.optimizer, mal.epoch_size, mal.malignancy.finetune_depth) == (3e-3, "sgd", 2_000, 1)
    assert TrainConfig.for_task("mal", data_roots=ROOTS, out_dir=Path("runs/b"), lr=0.01).lr == 0.01
    seg = TrainConfig.for_task("seg", data_roots=ROOTS, out_dir=Path("runs/c"))
    assert (seg.optimizer, seg.batch_size, seg.epoch_size) == ("adam", 16, 3_000)
    assert (seg.segmentation.fn_loss_weight, seg.segmentation.bce_loss_weight, seg.segmentation.seg_threshold) == (
        8.0,
        0.0,
        0.5,
    )
    assert seg.augmentation == AugmentationConfig.book_segmentation()
    assert isinstance(make_task(seg), SegmentationTask) and isinstance(make_task(mal), ClassifierTask)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"task": "det"}, r"^task 'det' is not one of cls, mal, seg$"),
        ({"optimizer": "rmsprop"}, r"^--optimizer 'rmsprop' is not one of sgd, adam$"),
        ({"batch_size": 0}, r"^--batch-size 0: expected a whole number >= 1$"),
        ({"epoch_size": 2.5}, r"^--epoch-size 2\.5: expected a whole number >= 1$"),
        ({"workers": -1}, r"^--workers -1: expected 0"),
        ({"val_stride": 1}, r"^--val-stride 1: expected 2 or more"),
        ({"momentum": 1.5}, r"^--momentum 1\.5: expected a number from 0\.0 up to 1\.0$"),
        ({"lr": float("nan")}, r"^--lr nan: expected a number above 0\.0 up to 10\.0$"),
        ({"data_roots": ()}, r"^no data roots: pass --data-root DIR or set CT_DATA_ROOT$"),
        ({"device": ""}, r"^--device '' is not a device; use cpu, cuda, cuda:N, mps or auto$"),
        ({"precision": "fp16", "device": "cpu"}, r"^--precision fp16 is for GPUs"),
    ],
)
def test_bad_values_are_refused_with_one_line(changes, message):
    options = {"data_roots": ROOTS, "out_dir": Path("runs/x"), **changes}
    with pytest.raises(BadInputError, match=message):
        TrainConfig.for_task(options.pop("task", "cls"), **options)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MalignancyTraining(finetune_depth=7), r"^--finetune-depth 7: expected 1 \(head only\) to 6"),
        (
            lambda: SegmentationTraining(seg_threshold=0.0),
            r"^--seg-threshold 0\.0: expected a number above 0\.0 up to 1\.0$",
        ),
        (
            lambda: SegmentationTraining(background_share=1.0),
            r"^--background-share 1\.0: expected a number from 0\.0 up to 0\.99$",
        ),
        (lambda: ClassificationTraining(balance_ratio=-1.0), r"^--balance-ratio -1\.0: expected a number from 0\.0"),
    ],
)
def test_each_section_refuses_its_bad_values_with_one_line(make, message):
    with pytest.raises(BadInputError, match=message):
        make()


def test_a_finetune_needs_the_malignancy_task():
    with pytest.raises(BadInputError, match=r"^--finetune x\.ckpt starts a malignancy model .* add --malignancy$"):
        TrainConfig.for_task(
            "cls", data_roots=ROOTS, out_dir=Path("r"), malignancy=MalignancyTraining(finetune=Path("x.ckpt"))
        )


def test_missing_input_files_are_refused_when_the_run_starts_not_when_it_is_described(tmp_path):
    from ct_pipeline.errors import CtError

    missing = ClassificationTraining(extra_candidates=(tmp_path / "nope.csv",))
    config = TrainConfig.for_task("cls", data_roots=ROOTS, out_dir=Path("r"), classification=missing)
    with pytest.raises(BadInputError, match=r"^--extra-candidates .*nope\.csv: no such file$"):
        config.check_inputs_exist()
    later = MalignancyTraining(finetune=tmp_path / "runs" / "cls" / "best.ckpt")  # an earlier run writes it
    config = TrainConfig.for_task("mal", data_roots=ROOTS, out_dir=Path("r"), malignancy=later)
    with pytest.raises(CtError, match=r"--finetune .*best\.ckpt"):
        config.check_inputs_exist()


@pytest.mark.parametrize(
    "section, task, message",
    [
        (
            {"own_share": 0.25},
            "cls",
            r"^--own-share 0\.25 draws from the pipeline's own candidates; add --own-candidates FILE \(`ct hard-negatives --with-positives` writes it\)$",
        ),
        (
            {"own_candidates": (Path("own.csv"),)},
            "cls",
            r"^--own-candidates own\.csv is only read with --own-share above 0; set one, e\.g\. 0\.25$",
        ),
        (
            {"own_candidates": (Path("own.csv"),), "own_share": 1.5},
            "cls",
            r"^--own-share 1\.5: expected a number from 0\.0 up to 1\.0$",
        ),
        ({"own_positive_share": -0.5}, "cls", r"^--own-positive-share -0\.5: expected a number from 0\.0 up to 1\.0$"),
        (
            {"own_candidates": (Path("own.csv"),), "own_share": 0.5},
            "mal",
            r"^--own-share trains the nodule classifier on the pipeline's own candidates; leave it out with --malignancy$",
        ),
    ],
)
def test_own_candidate_settings_are_refused_alone_out_of_range_or_for_malignancy(section, task, message):
    with pytest.raises(BadInputError, match=message):
        TrainConfig.for_task(
            task, data_roots=ROOTS, out_dir=Path("r"), classification=ClassificationTraining(**section)
        )


def test_a_missing_own_candidates_file_is_named_when_the_run_starts(tmp_path):
    section = ClassificationTraining(own_candidates=(tmp_path / "own.csv",), own_share=0.25)
    config = TrainConfig.for_task("cls", data_roots=ROOTS, out_dir=Path("r"), classification=section)
    with pytest.raises(BadInputError, match=r"^--own-candidates .*own\.csv: no such file$"):
        config.check_inputs_exist()


def test_a_device_is_a_string_checked_when_the_run_starts():
    config = TrainConfig.for_task("cls", data_roots=ROOTS, out_dir=Path("r"), device="cuda:3")
    assert config.device == "cuda:3"  # accepted here; resolve_device knows the machine
    with pytest.raises(BadInputError, match=r"^--device 'tpu' is not a device; use cpu, cuda, cuda:N, mps or auto$"):
        resolve_device("tpu")


def test_device_and_precision_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            BadInputError,
            match=r"^--device cuda: torch sees no GPU here; this machine has cpu: use one of them or auto$",
        ):
            resolve_device("cuda")
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    assert resolve_precision("auto", torch.device("cpu"), "seg") == ("bf16" if cpu_runs_bf16_inference() else "fp32")
    with pytest.raises(BadInputError, match=r"--precision fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_single_process_without_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)


def _help(command: str) -> str:
    result = run_ct(command, "--help", env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_train_commands_show_the_librarys_defaults_and_no_type_for_flags():
    from ct_pipeline.training import TaskDefaults

    seg, nodule, malignancy = TaskDefaults.segmentation(), TaskDefaults.nodule(), TaskDefaults.malignancy()
    seg_help, cls_help = _help("train-seg"), _help("train-cls")
    assert f"[default: {seg.epoch_size}]" in seg_help and f"[default: {seg.augmentation.shift_fraction}]" in seg_help
    assert f"[default: ({nodule.epoch_size}; {malignancy.epoch_size} with --malignancy)]" in cls_help
    assert f"[default: ({nodule.lr:g}; {malignancy.lr:g} with --malignancy)]" in cls_help
    assert f"[default: ({nodule.augmentation.shift_fraction:g})]" in cls_help
    for text in (seg_help, cls_help):
        assert "--workers" in text and "--num-workers" not in text  # the old name is a hidden alias
        flags = [line for line in text.splitlines() if line.lstrip("│ ").startswith(("--resume ", "--no-augment "))]
        assert len(flags) == 2 and not any("<bool>" in line for line in flags), flags
    assert "--seg-threshold" in seg_help and "--threshold " not in seg_help


def test_the_old_num_workers_name_still_reaches_the_config(tmp_path):
    result = run_ct("train-seg", "--data-root", tmp_path, "--num-workers", "-1")
    assert result.exit_code == 2
    assert "--num-workers is now called --workers" in result.output and "--workers -1: expected 0" in result.output


@pytest.mark.parametrize("task", ["cls", "mal", "seg"])
def test_a_rendered_command_line_builds_the_config_it_was_rendered_from(task, tmp_path, monkeypatch):
    from dataclasses import replace

    import cli.train_cmd
    from ct_pipeline.training.command import train_argv

    (tmp_path / "a.csv").write_text("x")
    config = TrainConfig.for_task(
        task,
        data_roots=(tmp_path,),
        out_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
        epochs=3,
        workers=0,
        threads=2,
        channels_last=False,
        precision="bf16",
        device="cuda:1",
        seed=9,
        momentum=0.5,
        lr=0.25,
        augmentation=AugmentationConfig.off()
        if task == "seg"
        else replace(
            AugmentationConfig(),
            mirror=False,
            noise_hu=5.0,
            noise_max_hu=30.0,
            hu_scale_fraction=0.05,
            hu_offset_hu=12.5,
            kernel_probability=0.25,
            blur_sigma_max_vox=0.5,
            sharpen_amount_max=0.75,
        ),
        segmentation=SegmentationTraining(seg_threshold=0.25, background_share=0.5)
        if task == "seg"
        else SegmentationTraining(),
        classification=ClassificationTraining(
            centre_head=True,
            extra_candidates=(tmp_path / "a.csv",) * 2,
            own_candidates=(tmp_path / "own.csv", tmp_path / "own2.csv"),
            own_share=0.25,
            own_positive_share=0.75,
            crop_spacing_mm=(1.5, 0.7, 0.703125),
        )
        if task == "cls"
        else ClassificationTraining(),
        malignancy=MalignancyTraining(finetune=tmp_path / "n.ckpt", finetune_depth=3)
        if task == "mal"
        else MalignancyTraining(),
    )
    argv = train_argv(config)
    assert "--no-channels-last" in argv and ("--no-augment" in argv) == (task == "seg")
    if task == "cls":
        assert " --own-candidates " + str(tmp_path / "own.csv") + " --own-candidates " in " ".join(argv)
        assert argv[argv.index("--own-share") + 1] == "0.25" and argv[argv.index("--own-positive-share") + 1] == "0.75"
    built = []
    monkeypatch.setattr(cli.train_cmd, "_run", built.append)
    result = run_ct(*argv)
    assert result.exit_code == 0, result.output
    assert built == [config]


@pytest.mark.parametrize(
    ("flags", "cap", "expected"),
    [
        ("fpu avx512f avx512_bf16", None, True),
        ("fpu avx512f amx_bf16 amx_tile", None, True),
        ("fpu avx2 avx512f avx512_vnni", None, False),  # no bf16 dot products: fp32
        ("fpu avx512f avx512_bf16", "SSE41", False),  # the numeric tests' cap: oneDNN would emulate bf16
        ("fpu avx512f avx512_bf16", "avx512_core_bf16", True),
        ("fpu avx512f avx512_bf16", "AVX512_CORE", False),
        ("fpu avx512f amx_bf16", "AVX10_1_512_AMX", True),
    ],
)
def test_bf16_inference_needs_the_cpus_bf16_instructions_and_onednn_allowed_to_use_them(
    monkeypatch, tmp_path, flags, cap, expected
):
    from ct_pipeline import devices

    monkeypatch.setattr(devices, "_cpu_flags", lambda: set(flags.split()))
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert devices.cpu_runs_bf16_inference() is expected
    for network in ("seg", "cls", "mal"):
        assert resolve_precision("auto", torch.device("cpu"), network) == ("bf16" if expected else "fp32")
    assert resolve_precision("auto", torch.device("cpu"), "train") == ("bf16" if "amx_bf16" in flags else "fp32")
    assert resolve_precision("fp32", torch.device("cpu"), "seg") == "fp32"


def test_train_cls_own_share_without_a_file_is_one_line_and_exit_2(tmp_path):
    result = run_ct("train-cls", "--data-root", tmp_path, "--out", tmp_path / "run", "--own-share", "0.25")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --own-share 0.25 draws from the pipeline's own candidates; "
        "add --own-candidates FILE (`ct hard-negatives --with-positives` writes it)\n"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, expected",
    [("auto", "auto"), ("1.5,0.7,0.7", (1.5, 0.7, 0.7)), ("native", None), (" 2, 1 ,1", (2.0, 1.0, 1.0))],
)
def test_the_crop_spacing_option_reaches_the_config(text, expected, tmp_path, monkeypatch):
    import cli.train_cmd
    from ct_pipeline.training.command import train_argv

    built = []
    monkeypatch.setattr(cli.train_cmd, "_run", built.append)
    result = run_ct("train-cls", "--data-root", tmp_path, "--crop-spacing", text)
    assert result.exit_code == 0, result.output
    assert built[0].classification.crop_spacing_mm == expected
    assert ("--crop-spacing" in train_argv(built[0])) == (expected is not None)
