"""onnxruntime against torch on the CPU, for the book's two networks and for `ct diagnose` on the real CT.

Each network is timed on the real CT's reference inputs (``reference_outputs.npz``) one batch at a
time on one thread, as `ct diagnose`'s workers run them: torch as diagnose prepares a checkpoint
(channels-last, the U-Net's BatchNorms folded, fp32) against the file `ct models export --format
onnx` writes, run by onnxruntime's CPU provider with one intra-op thread. Then the whole pipeline on
the real CT, from the checkpoints and from the ONNX files, default options, twice each in ABBA order.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import Figure, Section, best_time
from benchmarks.processes import SHARED, import_book_weights

N_CROPS = 64  # a classifier batch as diagnose's --cls-batch-size default runs it


def _networks(tmp: Path) -> dict[str, dict[str, object]]:
    from ct_pipeline.diagnosis.config import InferenceOptions
    from ct_pipeline.diagnosis.networks import load_diagnosis_models
    from ct_pipeline.models.export import export_model

    seg, cls = import_book_weights(tmp)
    onnx = {kind: tmp / f"{kind}.onnx" for kind in ("seg", "cls")}
    export_model(seg, "onnx", onnx["seg"])
    export_model(cls, "onnx", onnx["cls"])
    single = InferenceOptions(device="cpu", workers=1, threads=1)
    return {
        "checkpoint": {"paths": (seg, cls), "models": load_diagnosis_models(seg, cls, None, single)},
        "onnx": {
            "paths": (onnx["seg"], onnx["cls"]),
            "models": load_diagnosis_models(onnx["seg"], onnx["cls"], None, single),
        },
    }


def _diagnose_s(volume, paths: tuple[Path, Path]) -> tuple[float, dict[str, float], int]:
    from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions
    from ct_pipeline.diagnosis.networks import load_diagnosis_models
    from ct_pipeline.diagnosis.pipeline import diagnose

    models = load_diagnosis_models(*paths, None, InferenceOptions(device="cpu"))
    start = time.perf_counter()
    result = diagnose(volume, models, DiagnosisConfig())
    return time.perf_counter() - start, dict(result.timings_s), len(result.nodules(0.5))


def run() -> Section:
    from ct_pipeline.loading import load_ct

    reference = np.load(SHARED / "data" / "book-weights" / "reference_outputs.npz")
    slices = torch.from_numpy(reference["seg_input"])  # (2, 7, 512, 512)
    crops = torch.from_numpy(np.resize(reference["cls_input"], (N_CROPS, 1, 32, 48, 48)))
    previous_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="ct-bench-onnx-") as tmp:
        nets = _networks(Path(tmp))
        torch.set_num_threads(1)
        try:
            times = {
                (name, kind): best_time(lambda m=entry["models"], k=kind, x=batch: getattr(m, k)(x), repeat=5)
                for name, entry in nets.items()
                for kind, batch in (("seg", slices), ("cls", crops))
            }
        finally:
            torch.set_num_threads(previous_threads)
        volume = load_ct(SHARED / "data" / "dicom" / "C3N-00247-chest-ct")
        # ABBA order, fastest of two each: the first run in a process pays one-time costs (kernel set-up).
        runs: dict[str, list[tuple[float, dict[str, float], int]]] = {"checkpoint": [], "onnx": []}
        for name in ("checkpoint", "onnx", "onnx", "checkpoint"):
            runs[name].append(_diagnose_s(volume, nets[name]["paths"]))
        whole = {name: min(results, key=lambda r: r[0]) for name, results in runs.items()}
    figures = [
        Figure(
            "U-Net, 2 slices of 7x512x512, 1 thread",
            times["onnx", "seg"],
            "s",
            times["checkpoint", "seg"],
            "torch as diagnose runs it (BatchNorm folded, channels-last, fp32)",
            times["checkpoint", "seg"] / times["onnx", "seg"],
            "",
            None,
            "median of 5, onnxruntime CPU provider",
        ),
        Figure(
            f"classifier, {N_CROPS} crops of 32x48x48, 1 thread",
            times["onnx", "cls"],
            "s",
            times["checkpoint", "cls"],
            "torch as diagnose runs it (channels-last, fp32)",
            times["checkpoint", "cls"] / times["onnx", "cls"],
            "",
            None,
            "median of 5, onnxruntime CPU provider",
        ),
    ]
    for stage in ("segmentation", "classification"):
        ours, theirs = whole["onnx"][1][stage], whole["checkpoint"][1][stage]
        figures.append(
            Figure(
                f"ct diagnose on the real CT: {stage} stage",
                ours,
                "s",
                theirs,
                "from the checkpoints",
                theirs / ours,
                "",
                None,
                "default options (one single-threaded worker per core)",
            )
        )
    figures.append(
        Figure(
            "ct diagnose on the real CT: all stages",
            whole["onnx"][0],
            "s",
            whole["checkpoint"][0],
            "from the checkpoints",
            whole["checkpoint"][0] / whole["onnx"][0],
            "",
            None,
            f"findings at p >= 0.5: {whole['onnx'][2]} from ONNX, {whole['checkpoint'][2]} from the checkpoints",
        )
    )
    return Section(
        key="onnx",
        title="onnxruntime against torch on the CPU (ct models export --format onnx)",
        command="python -m benchmarks.run onnx",
        setup="the book's weights imported and exported to ONNX (opset 18); the real CT's reference inputs; "
        f"onnxruntime CPU provider against torch {torch.__version__}; {os.cpu_count()} cores",
        expectation="about even: both call vectorised CPU kernels; torch's path has the U-Net's BatchNorms folded",
        figures=figures,
    )
