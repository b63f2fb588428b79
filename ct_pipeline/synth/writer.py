"""Generate the series and write them in LUNA16's layout (plus DICOM copies when asked).

Output of :func:`write_synthetic_dataset`::

    OUT_DIR/README.txt
    OUT_DIR/subset0/<uid>.mhd, <uid>.raw
    OUT_DIR/candidates.csv                      seriesuid,coordX,coordY,coordZ,class
    OUT_DIR/annotations.csv                     seriesuid,coordX,coordY,coordZ,diameter_mm
    OUT_DIR/annotations_with_malignancy.csv     ... ,mal_bool,mal_details,bbox*,len_mal_details
    OUT_DIR/nodule_truth.csv                    ... ,diameter_mm,volume_mm3,kind,juxtapleural
    OUT_DIR/dicom/<uid>/000000.dcm ...          with --dicom
    OUT_DIR/followup/<uid>.mhd, .raw            with --follow-up (and their DICOM with --dicom)
    OUT_DIR/followup_pairs.csv                  prior_seriesuid,current_seriesuid,interval_days,pose...
    OUT_DIR/followup_truth.csv                  per nodule: status, centres and volumes in both scans

Each series draws from its own random streams (:mod:`~ct_pipeline.synth.streams`), so a series
does not change when another one does, and the same config gives byte-identical files. What is
drawn is in :mod:`~ct_pipeline.synth.series`; the CSV rows in :mod:`~ct_pipeline.synth.tables`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ct_pipeline.atomic import atomic_write_text
from ct_pipeline.loading.mhd import write_mhd
from ct_pipeline.synth.config import SynthConfig, direction_kinds, plan_series
from ct_pipeline.synth.dicom import write_dicom
from ct_pipeline.synth.followup import (
    FOLLOW_UP_DIR,
    pair_row,
    plan_follow_up,
    study_date,
)
from ct_pipeline.synth.followup import (
    PAIR_HEADER as FOLLOW_UP_PAIR_HEADER,
)
from ct_pipeline.synth.followup import (
    TRUTH_HEADER as FOLLOW_UP_TRUTH_HEADER,
)
from ct_pipeline.synth.followup import (
    truth_rows as follow_up_truth_rows,
)
from ct_pipeline.synth.layout import SeriesLayout
from ct_pipeline.synth.manifest import SynthManifest, prepare_out_dir
from ct_pipeline.synth.readme import readme_text
from ct_pipeline.synth.series import SyntheticSeries, generate_series
from ct_pipeline.synth.tables import HEADERS, csv_text, series_rows

SUBSET = "subset0"


@dataclass(frozen=True)
class SeriesSummary:
    """What was written for one series (spacing in mm, xyz order; shape in irc order)."""

    series_uid: str
    shape_irc: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    direction_kind: str  # "identity", "flipped", "oblique" or "oblique+flipped"
    n_nodules: int
    n_malignant: int
    n_candidates: int
    seconds: float  # generating and writing this series


@dataclass(frozen=True)
class SynthResult:
    """The written data set: its folder and one summary per series, in generation order."""

    out_dir: Path
    series: tuple[SeriesSummary, ...]

    @property
    def n_nodules(self) -> int:
        return sum(s.n_nodules for s in self.series)

    @property
    def n_candidates(self) -> int:
        return sum(s.n_candidates for s in self.series)


def write_synthetic_dataset(
    config: SynthConfig, on_series: Callable[[SeriesSummary], None] | None = None
) -> SynthResult:
    """Generate ``config.n_series`` chest CTs and write them under ``config.out_dir``.

    Args:
        config: what to generate and where.
        on_series: called after each series is written (for progress display).

    Raises:
        BadInputError: the output folder is a file, or not empty without ``overwrite``.
    """
    kinds = direction_kinds(config)
    layouts = [plan_series(config, i, *kinds[i]) for i in range(config.n_series)]
    manifest = prepare_out_dir(config.out_dir, config.overwrite)
    (config.out_dir / SUBSET).mkdir(exist_ok=True)
    rows: dict[str, list[list[str]]] = {name: [] for name in HEADERS}
    follow_up_rows: dict[str, list[list[str]]] = {"pairs": [], "truth": []}
    summaries: list[SeriesSummary] = []
    for layout in layouts:
        started = time.perf_counter()
        series = generate_series(config, layout)
        _write_series(config, manifest, SUBSET, series)
        if config.follow_up:
            _write_follow_up(config, manifest, series, follow_up_rows)
        for name, new_rows in series_rows(series).items():
            rows[name] += new_rows
        summaries.append(_summary(series, seconds=time.perf_counter() - started))
        if on_series is not None:
            on_series(summaries[-1])
    tables = {name: csv_text(header, rows[name]) for name, header in HEADERS.items()}
    tables["README.txt"] = readme_text(config, {s.series_uid: s.direction_kind for s in summaries})
    if config.follow_up:
        tables["followup_pairs.csv"] = csv_text(FOLLOW_UP_PAIR_HEADER, follow_up_rows["pairs"])
        tables["followup_truth.csv"] = csv_text(FOLLOW_UP_TRUTH_HEADER, follow_up_rows["truth"])
    manifest.start(*tables)
    for name, text in tables.items():
        atomic_write_text(config.out_dir / name, text)
    manifest.finish(*tables)
    return SynthResult(out_dir=config.out_dir, series=tuple(summaries))


def direction_kind(layout: SeriesLayout) -> str:
    flipped = any(layout.flips_irc)
    if layout.oblique:
        return "oblique+flipped" if flipped else "oblique"
    return "flipped" if flipped else "identity"


def _summary(series: SyntheticSeries, seconds: float) -> SeriesSummary:
    layout = series.layout
    return SeriesSummary(
        series_uid=layout.series_uid,
        shape_irc=layout.shape_irc,
        spacing_xyz=layout.spacing_xyz,
        direction_kind=direction_kind(layout),
        n_nodules=len(series.nodules),
        n_malignant=sum(n.is_malignant for n in series.nodules),
        n_candidates=len(series.candidates.is_nodule),
        seconds=seconds,
    )


def _write_series(
    config: SynthConfig, manifest: SynthManifest, folder: str, series: SyntheticSeries, date: str = "20000101"
) -> None:
    """``folder/<uid>.mhd`` and, with ``--dicom``, ``dicom/<uid>/``, listed in the manifest as they are written."""
    uid = series.layout.series_uid
    written = [f"{folder}/{uid}.mhd", f"{folder}/{uid}.raw"]
    if config.dicom:
        written += [f"dicom/{uid}/", f"dicom/.{uid}.partial/"]
    manifest.start(*written)
    (config.out_dir / folder).mkdir(exist_ok=True)
    write_mhd(series.hu, series.layout.geometry, config.out_dir / folder / f"{uid}.mhd")
    if config.dicom:
        write_dicom(config.out_dir, config.seed, series.layout, series.hu, date)
    manifest.finish(*written)


def _write_follow_up(
    config: SynthConfig, manifest: SynthManifest, prior: SyntheticSeries, rows: dict[str, list[list[str]]]
) -> None:
    """The follow-up scan of ``prior`` under ``followup/``, and its rows of the two truth tables."""
    plan = plan_follow_up(config, prior.layout, list(prior.nodules))
    current = generate_series(config, prior.layout, follow_up=plan)
    _write_series(config, manifest, FOLLOW_UP_DIR, current, study_date(plan.interval_days))
    uid = prior.layout.series_uid
    rows["pairs"].append(pair_row(uid, plan))
    rows["truth"] += follow_up_truth_rows(uid, prior.layout, plan, list(prior.nodules), list(current.nodules))
