"""`ct compare PRIOR CURRENT`: two scans of one patient -- which nodules grew, which are new."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.dicomweb_options import CaBundleOption, DicomwebOption, dicomweb_server
from cli.options import (
    AllowUnevenOption,
    CacheDirOption,
    ClsModelOption,
    DataRootsOption,
    DeviceOption,
    JsonOption,
    MalModelOption,
    QuietOption,
    RunsDirOption,
    SegModelOption,
    ThreadsOption,
    ThresholdOption,
)
from cli.output import console, print_json
from cli.progress import ProgressDisplay
from ct_pipeline.diagnosis.config import DiagnosisConfig

EPILOG = (
    "Examples: ct compare prior/ current/ --report cmp/ | "
    "ct compare UID1 UID2 --data-root data --prior-results results/ --current-results results/ --interval-days 180. "
    "Exit codes: 0 done, 2 bad input. Research software, not a medical device: measurements are not for clinical decisions."
)
_SCANS = "Scans"


def _results_option(which: str):
    return typer.Option(
        f"--{which}-results",
        help=f"{which.upper()}'s findings from an earlier `ct diagnose --out` (its result file, or the folder) "
        "instead of diagnosing it again.",
        show_default=False,
        rich_help_panel=_SCANS,
    )


def compare_command(
    prior: Annotated[
        str, typer.Argument(metavar="PRIOR", help="The earlier scan: a series UID, DICOM folder or image file.")
    ],
    current: Annotated[str, typer.Argument(metavar="CURRENT", help="The later scan, likewise.")],
    prior_results: Annotated[Path | None, _results_option("prior")] = None,
    current_results: Annotated[Path | None, _results_option("current")] = None,
    interval_days: Annotated[
        float | None,
        typer.Option(
            "--interval-days",
            min=0.0,
            show_default=False,
            rich_help_panel=_SCANS,
            help="Days between the scans, for the doubling time. Default: from both scans' DICOM StudyDate.",
        ),
    ] = None,
    threshold: ThresholdOption = DiagnosisConfig().nodule_threshold,
    max_distance: Annotated[
        float,
        typer.Option(
            "--max-distance",
            min=0.0,
            help="Nodules pair only when their centres lie this close (mm) after registration (or within half the larger one's diameter).",
        ),
    ] = 10.0,
    seg_model: SegModelOption = None,
    cls_model: ClsModelOption = None,
    mal_model: MalModelOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    json_output: JsonOption = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", show_default=False, help="Folder for an index.html with each nodule in both scans."),
    ] = None,
    quiet: QuietOption = False,
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    allow_uneven_spacing: AllowUnevenOption = False,
    dicomweb: DicomwebOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """Compare two scans of one patient: register CURRENT to PRIOR on the lungs, pair their nodules, and report
    each pair's volume change and doubling time, and the new and vanished ones.

    Research software, not a medical device: measurements are not for clinical decisions.
    """
    from ct_pipeline.apps.compare import CompareRequest, run_compare
    from ct_pipeline.apps.diagnose import DiagnoseRequest
    from ct_pipeline.diagnosis.config import InferenceOptions
    from ct_pipeline.followup.matching import MatchConfig
    from ct_pipeline.loading import LoadOptions
    from ct_pipeline.paths import resolve_data_roots

    diagnose = DiagnoseRequest(
        data_roots=tuple(resolve_data_roots(data_root)),
        cache_dir=cache_dir,
        load=LoadOptions(allow_uneven_spacing=allow_uneven_spacing, dicomweb=dicomweb_server(dicomweb, ca_bundle)),
        seg_model=seg_model,
        cls_model=cls_model,
        mal_model=mal_model,
        runs_dir=runs_dir,
        config=DiagnosisConfig(nodule_threshold=threshold),
        inference=InferenceOptions(device=device, threads=threads),
    )
    request = CompareRequest(
        prior=prior,
        current=current,
        diagnose=diagnose,
        prior_results=prior_results,
        current_results=current_results,
        interval_days=interval_days,
        report=report,
        matching=MatchConfig(max_distance_mm=max_distance),
    )
    progress = ProgressDisplay.on_stderr(quiet)
    comparison = run_compare(request, progress)
    progress.pause()
    if json_output:
        for warning in comparison.warnings:  # stdout stays JSON; its "warnings" list holds them too
            typer.echo(f"WARNING: {warning}", err=True)
        print_json(comparison.to_dict())
    else:
        _print_comparison(comparison)
    if report is not None:
        typer.echo(f"wrote {report / 'index.html'}", err=json_output)


def _volume(finding) -> str:
    from ct_pipeline.followup.matching import finding_volume_mm3

    volume = finding_volume_mm3(finding)
    return "-" if volume is None else f"{volume:.0f}"


def _centre(finding) -> str:
    return ", ".join(f"{v:.1f}" for v in finding.center_xyz)


def _near(comparison, finding, scan: str) -> str:
    k = comparison.pair_near(finding, scan)
    return "" if k is None else f" (next to pair {k}'s nodule: a fragment of it?)"


def _print_comparison(comparison) -> None:
    c, reg = comparison, comparison.registration
    interval = (
        "unknown (no StudyDate; give --interval-days)" if c.interval_days is None else f"{c.interval_days:g} days"
    )
    typer.echo(
        f"PRIOR {c.prior.series_uid}: {c.prior.n_nodules} nodule(s); CURRENT {c.current.series_uid}: "
        f"{c.current.n_nodules} nodule(s); interval {interval}"
    )
    typer.echo(
        f"registered on the lungs: rotation {reg.rigid_angle_deg:.1f} deg, shift {reg.rigid_translation_mm:.1f} mm; "
        f"lung overlap {reg.lung_overlap_before:.3f} -> {reg.lung_overlap_after:.3f}"
    )
    for warning in c.warnings:  # with the table (stdout), so a saved table keeps them
        typer.echo(f"WARNING: {warning}")
    # Narrow enough for 80 columns: the current centre and the rest are in --json.
    table = Table(
        title=f"seen in both scans ({len(c.pairs)})",
        caption="#: rank in prior > in current; dist: mm apart after registration; volumes mm3; doubling time in days",
    )
    for column in ("#", "prior centre (mm)", "dist", "prior", "current", "change", "doubling"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for p in c.pairs:
        change = "-" if p.volume_change_pct is None else f"{p.volume_change_pct:+.0f} %"
        doubling = "-" if p.doubling_time_days is None else f"{p.doubling_time_days:.0f}"
        table.add_row(
            f"{p.prior_rank}>{p.current_rank}",
            _centre(p.prior),
            f"{p.distance_mm:.1f}",
            _volume(p.prior),
            _volume(p.current),
            change,
            doubling,
        )
    console().print(table)
    for scan, title, entries in (
        ("prior", "in PRIOR only (vanished or missed)", c.vanished),
        ("current", "in CURRENT only (new or missed)", c.new),
    ):
        listed = "; ".join(f"#{rank} at {_centre(f)} mm, {_volume(f)} mm3{_near(c, f, scan)}" for rank, f in entries)
        typer.echo(f"{title}: {listed or 'none'}")
    typer.echo("Research software: measurements are not for clinical decisions.")


def register(app: typer.Typer) -> None:
    app.command("compare", epilog=EPILOG)(compare_command)
