"""Commands about model checkpoints: `ct models import-book`, `ct models info`, `ct models export`."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.options import JsonOption
from cli.output import console, print_json

models_app = typer.Typer(help="Inspect and convert model checkpoints.", no_args_is_help=True)


class ModelKind(str, enum.Enum):
    """The kinds of checkpoint (values as stored in the file)."""

    seg = "seg"
    cls = "cls"
    mal = "mal"


_KIND_HELP = "seg: segmentation U-Net; cls: nodule/non-nodule classifier; mal: benign/malignant classifier."


@models_app.command(
    "import-book",
    epilog="Example: ct models import-book seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
    " --kind seg -o models/seg_book.ckpt",
)
def import_book(
    source: Annotated[
        Path, typer.Argument(metavar="SOURCE", help="The book's checkpoint file (*.state).", show_default=False)
    ],
    kind: Annotated[ModelKind, typer.Option("--kind", help=_KIND_HELP, show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Project checkpoint to write.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Convert one of the book's published checkpoints into the project's format.

    The weights load unchanged; the source file name and SHA-256 are kept as provenance.
    """
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.models import KIND_NAMES, import_book_checkpoint  # torch: imported when used
    from ct_pipeline.outputs import Place, refuse_overlaps

    refuse_overlaps([Place("--output", output)], [Place("SOURCE", source)])
    check_writable(output, "--output")
    checkpoint = import_book_checkpoint(source, kind.value, output, overwrite=force)
    typer.echo(
        f"wrote {output}: {KIND_NAMES[checkpoint.kind]} ({checkpoint.arch}), epoch {checkpoint.epoch}, "
        f"{checkpoint.samples_seen:,} samples seen, sha256 of source {checkpoint.config['source']['sha256'][:12]}"
    )


@models_app.command(
    "info", epilog="Examples: ct models info models/seg_book.ckpt | ct models info cls.ckpt --kind cls --json"
)
def info(
    checkpoint_path: Annotated[Path, typer.Argument(metavar="CKPT", help="A project checkpoint.", show_default=False)],
    kind: Annotated[
        ModelKind | None,
        typer.Option("--kind", help="Fail unless the checkpoint is of this kind. " + _KIND_HELP, show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show a checkpoint's kind, architecture, epoch, metrics and parameter count.

    The weights are loaded into the network, so a checkpoint that prints here also loads in training and diagnosis.
    """
    from ct_pipeline.models import build_model, count_parameters, load_checkpoint  # torch: imported when used

    checkpoint = load_checkpoint(
        checkpoint_path,
        expected_kind=kind.value if kind else None,
        option=f"`ct models info --kind {kind.value}`" if kind else None,
    )
    summary = {**checkpoint.summary(), "parameter_count": count_parameters(build_model(checkpoint))}
    if json_output:
        print_json(summary)
        return
    table = Table(show_header=False, title=f"checkpoint {checkpoint_path}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key in ("kind_name", "arch", "epoch", "samples_seen", "parameter_count", "ct_version"):
        value = summary[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for group in ("metrics", "model_config", "config"):
        for key, value in _flatten(summary[group]).items():
            table.add_row(f"{group}.{key}", str(value))
    console().print(table)


class ExportFormat(str, enum.Enum):
    """The formats ``ct models export`` writes."""

    torchscript = "torchscript"
    onnx = "onnx"


@models_app.command(
    "export",
    epilog="Examples: ct models export models/seg_book.ckpt --format onnx -o models/seg.onnx | "
    "ct models export models/cls_book.ckpt --format torchscript -o models/cls.pt",
)
def export(
    checkpoint_path: Annotated[Path, typer.Argument(metavar="CKPT", help="A project checkpoint.", show_default=False)],
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="torchscript (torch.jit.load) or onnx (onnxruntime; needs the \\[onnx] extra).",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Write a checkpoint's network as TorchScript or ONNX, to run without ct's training code.

    The file keeps ct's metadata (kind, input shape, HU range, the checkpoint's SHA-256, the ct, torch and opset versions); `ct diagnose --seg-model FILE --cls-model FILE` runs it. Any batch size works.
    """
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.models import KIND_NAMES
    from ct_pipeline.models.export import export_model  # torch: imported when used
    from ct_pipeline.outputs import Place, refuse_overlaps

    refuse_overlaps([Place("--output", output)], [Place("CKPT", checkpoint_path)])
    check_writable(output, "--output")
    metadata = export_model(checkpoint_path, fmt.value, output, overwrite=force)
    if json_output:
        print_json({"output": str(output), **dataclasses.asdict(metadata)})
        return
    shape = "(" + ", ".join("N" if n is None else str(n) for n in metadata.input_shape) + ")"
    typer.echo(
        f"wrote {output}: {KIND_NAMES[metadata.kind]} as {metadata.format}"
        f"{f' (opset {metadata.opset})' if metadata.opset else ''}, input {shape}, "
        f"from checkpoint sha256 {metadata.checkpoint_sha256[:12]}"
    )


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested dicts as one level with dotted keys (for the table)."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = f"{value:.4g}" if isinstance(value, float) else value
    return flat


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
