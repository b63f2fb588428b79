"""The findings as objects a radiology viewer opens: DICOM Segmentation and Structured Report.

``ct diagnose --dicom-out DIR`` writes, for a DICOM series, with highdicom:

* ``DIR/<series_uid>.seg.dcm``: a binary DICOM Segmentation referencing the source series'
  instances, one segment per finding at or above the nodule threshold (the finding's outline:
  its U-Net mask component cut at its HU edge, :mod:`~ct_pipeline.diagnosis.volumetry`),
  labelled with the finding's number and probabilities, the algorithm identified as ct with its
  version and the models' sha256;
* ``DIR/<series_uid>.sr.dcm``: a Comprehensive 3D SR, TID 1500 Measurement Report, one
  measurement group per finding: a 3D point (SCOORD3D) at its centre, its volume, long and short
  axis and mean diameter (:mod:`~ct_pipeline.diagnosis.volumetry`), the equivalent-sphere
  diameter, the nodule and the malignancy probability, and the segment's tracking identifiers.

Another input format has no instances to reference; there the mask goes into
``DIR/<series_uid>.findings.nrrd`` (each finding's segment number, its ``label`` in the JSON, in
the source geometry) and the same
measurements into ``DIR/<series_uid>.findings.json``. Where two findings share one mask
outline, its voxels are the first's (the higher-ranked one) and the second has no segment.
Research software: the objects say so in their content description.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ct_pipeline import __version__
from ct_pipeline.atomic import atomic_write_text, atomic_write_with
from ct_pipeline.diagnosis.result import DiagnosisResult, Finding
from ct_pipeline.diagnosis.result_files import result_file_name
from ct_pipeline.diagnosis.volumetry import MaskMeasurement
from ct_pipeline.errors import BadDataError
from ct_pipeline.geometry import image_on_grid
from ct_pipeline.pacs.server import DicomwebServer
from ct_pipeline.pacs.store import StoreOutcome, store_files
from ct_pipeline.volume import CtVolume

MANUFACTURER = "ct (research software)"
MODEL_NAME = "ct lung-nodule pipeline"
DISCLAIMER = "Research software, not a medical device"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
# No standard code says "nodule probability" of a detector; a private one does (scheme 99CT).
NODULE_PROBABILITY_CODE = ("NODULEPROB", "99CT", "Nodule probability")
SPHERE_DIAMETER_CODE = ("SPHEREDIAM", "99CT", "Equivalent sphere diameter")
# A viewer draws each segment in its recommended colour (RGB, 0-255).
SEGMENT_COLOURS = ((255, 64, 64), (64, 160, 255), (255, 200, 0), (80, 220, 120), (220, 90, 255), (255, 140, 40))


@dataclass(frozen=True)
class MarkedFinding:
    """A finding with its segment: ``number`` (1-based, its rank among the nodules) and the segment
    number in the SEG (None: its outline is all a higher-ranked finding's)."""

    number: int
    finding: Finding
    segment: int | None
    tracking_uid: str

    @property
    def measurement(self) -> MaskMeasurement | None:
        return self.finding.measurement


def label_map(volume: CtVolume, result: DiagnosisResult, threshold: float) -> tuple[np.ndarray, list[MarkedFinding]]:
    """uint16 (index, row, col) of segment numbers (0: none) and the findings at or above ``threshold``."""
    from highdicom import UID

    labels = np.zeros(volume.shape_irc, dtype=np.uint16)
    masks = {m.finding: m for m in result.nodule_masks}
    shown = [(i, f) for i, f in enumerate(result.findings) if f.nodule_prob >= threshold]
    marked: list[MarkedFinding] = []
    segment = 0
    for number, (index, finding) in enumerate(shown, start=1):
        this_segment = None
        if index in masks:
            nodule = masks[index]
            box = tuple(slice(s, s + n) for s, n in zip(nodule.start_irc, nodule.mask.shape))
            free = nodule.mask & (labels[box] == 0)
            if free.any():
                segment += 1
                this_segment = segment
                labels[box][free] = segment
        marked.append(MarkedFinding(number, finding, this_segment, str(UID())))
    return labels, marked


class DicomFindingsWriter:
    """``after`` hook of a batch: writes each diagnosed series' findings into ``out_dir`` and, with
    ``store``, sends the SEG and SR to that DICOMweb server (each once, see :mod:`ct_pipeline.pacs.store`).

    ``stored`` collects what the server accepted, and ``not_stored`` the series (UID, format) that
    had nothing to send (not DICOM: their findings are a local NRRD and JSON only), for the caller
    to report and clear.
    """

    def __init__(self, out_dir: Path, threshold: float = 0.5, store: DicomwebServer | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.threshold = threshold
        self.store = store
        self.stored: list[StoreOutcome] = []
        self.not_stored: list[tuple[str, str]] = []

    def __call__(self, volume: CtVolume, result: DiagnosisResult) -> DiagnosisResult:
        started = time.perf_counter()
        written = write_findings_objects(self.out_dir, volume, result, self.threshold)
        result = result.with_timings({"dicom": time.perf_counter() - started})
        dicom_files = [p for p in written if p.suffix == ".dcm"]
        if self.store is None:
            return result
        if not dicom_files:
            # A user who asked for --store must hear that nothing went to the server, not guess it.
            self.not_stored.append((volume.series_uid, volume.format))
            return result
        started = time.perf_counter()
        self.stored += store_files(self.store, dicom_files, findings_content_key(result, self.threshold))
        return result.with_timings({"store": time.perf_counter() - started})


def findings_content_key(result: DiagnosisResult, threshold: float) -> str:
    """What makes the written findings what they are (models, settings, source, threshold), hashed:
    equal keys, equal findings, so an object stored with it need not be stored again."""
    from ct_pipeline.diagnosis.provenance import comparable

    made_of = {"provenance": comparable(result.provenance), "threshold": threshold, "series_uid": result.series_uid}
    return hashlib.sha256(json.dumps(made_of, sort_keys=True, default=str).encode()).hexdigest()


def write_findings_objects(out_dir: Path, volume: CtVolume, result: DiagnosisResult, threshold: float) -> list[Path]:
    """Write the SEG and SR (DICOM input) or the NRRD label map and JSON (other input); their paths."""
    uid = result_file_name(volume.series_uid).removesuffix(".json")  # the UID itself when it is file-name safe
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels, marked = label_map(volume, result, threshold)
    if volume.format != "dicom":
        return _write_label_map(out_dir, uid, volume, result, labels, marked)
    sources = source_datasets(volume)
    with warnings.catch_warnings():  # highdicom's doubts about the source's own tags (e.g. a one-part name)
        warnings.simplefilter("ignore", UserWarning)
        seg, sr = _build_both(sources, labels, marked, result)
    return _save(out_dir, uid, seg, sr)


def _build_both(sources, labels, marked, result):
    seg = build_segmentation(sources, labels, marked, result) if any(m.segment for m in marked) else None
    return seg, build_report(sources, seg, marked)


def _save(out_dir: Path, uid: str, seg, sr) -> list[Path]:
    written = []
    for dataset, name in ((seg, f"{uid}.seg.dcm"), (sr, f"{uid}.sr.dcm")):
        if dataset is None:  # no finding: the report says so, a segmentation could not
            continue
        path = out_dir / name
        atomic_write_with(path, lambda tmp, d=dataset: d.save_as(tmp, enforce_file_format=True))
        written.append(path)
    return written


def source_datasets(volume: CtVolume) -> list:
    """The source series' headers, one per slice in the volume's index order."""
    import pydicom

    from ct_pipeline.loading.dicom import discover_series, order_slices

    series = [
        s
        for folder in volume.source.split(",")
        for s in discover_series(Path(folder))
        if s.series_uid == volume.series_uid
    ]
    if not series:
        raise BadDataError(f"{volume.source}: series {volume.series_uid} is no longer there; cannot reference it")
    stack = order_slices(series[0], allow_uneven_spacing=True)
    if stack.uneven or len(stack.files) != volume.shape_irc[0]:
        raise BadDataError(
            f"series {volume.series_uid} was resampled onto a regular grid (missing or uneven slices): its slices are "
            "not the source's instances, so no DICOM Segmentation can reference them"
        )
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in stack.files]
    if not all("FrameOfReferenceUID" in d for d in datasets):
        raise BadDataError(
            f"series {volume.series_uid} has slices without a FrameOfReferenceUID: a DICOM Segmentation and SR must "
            "name the frame of reference of the images they mark (drop --dicom-out for this series)"
        )
    return datasets


def _algorithm(result: DiagnosisResult):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    models = dict(result.provenance.get("models", {}))
    parameters = {f"{kind}_model_sha256": str(record.get("sha256", "")) for kind, record in models.items()}
    return hd.AlgorithmIdentificationSequence(
        name="ct",
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
        source=MODEL_NAME,
        parameters=parameters or None,
    )


def _new_instance(series_number: int) -> dict:
    """The identity of a new object: its own series and instance UIDs, and who made it."""
    from highdicom import UID

    return {
        "series_instance_uid": UID(),
        "series_number": series_number,
        "sop_instance_uid": UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
    }


def _segment_label(item: MarkedFinding) -> str:
    text = f"Finding {item.number} nodule p {item.finding.nodule_prob:.2f}"
    if item.finding.malignancy_prob is not None:
        text += f" malignancy p {item.finding.malignancy_prob:.2f}"
    return text[:64]


def build_segmentation(sources: list, labels: np.ndarray, marked: list[MarkedFinding], result: DiagnosisResult):
    """The binary DICOM Segmentation (a pydicom Dataset); one segment per finding with a segment."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = _algorithm(result)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=item.segment,
            segment_label=_segment_label(item),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=item.tracking_uid,
            tracking_id=f"finding {item.number}",
            display_color=hd.color.CIELabColor.from_rgb(*SEGMENT_COLOURS[(item.segment - 1) % len(SEGMENT_COLOURS)]),
        )
        for item in marked
        if item.segment is not None
    ]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **_new_instance(SEG_SERIES_NUMBER),
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        device_serial_number="0",
        content_description=DISCLAIMER,
        content_creator_name="ct^pipeline",
        series_description="ct nodule findings (research)",
    )


def _measurements(item: MarkedFinding) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mm, mm3, ratio = codes.UCUM.Millimeter, codes.UCUM.CubicMillimeter, codes.UCUM.NoUnits
    values = [
        (hd.sr.CodedConcept(*SPHERE_DIAMETER_CODE), item.finding.diameter_mm, mm, None),
        (hd.sr.CodedConcept(*NODULE_PROBABILITY_CODE), item.finding.nodule_prob, ratio, None),
    ]
    if item.finding.malignancy_prob is not None:
        values.append((codes.DCM.ProbabilityOfCancer, item.finding.malignancy_prob, ratio, None))
    if item.measurement is not None:
        values += [
            (codes.SCT.Volume, item.measurement.volume_mm3, mm3, None),
            (codes.SCT.LongAxis, item.measurement.long_axis_mm, mm, None),
            (codes.SCT.ShortAxis, item.measurement.short_axis_mm, mm, None),
            # the guidelines' "mean diameter": of the long and short axis
            (codes.SCT.Diameter, item.measurement.mean_diameter_mm, mm, codes.SCT.Mean),
        ]
    return [
        hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)
        for name, value, unit, derivation in values
    ]


def build_report(sources: list, seg, marked: list[MarkedFinding]):
    """The TID 1500 Measurement Report (a pydicom Dataset): one group per finding (see the module)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frame_of_reference = sources[0].FrameOfReferenceUID
    groups = [
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=item.tracking_uid, identifier=f"finding {item.number}"),
            referenced_region=hd.sr.ImageRegion3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                graphic_data=np.array([item.finding.center_xyz], dtype=np.float64),
                frame_of_reference_uid=frame_of_reference,
            ),
            finding_type=codes.SCT.Nodule,
            measurements=_measurements(item),
        )
        for item in marked
    ]
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="ct", manufacturer_name=MANUFACTURER, model_name=MODEL_NAME
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTChestReport,
        imaging_measurements=groups or None,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*sources, *([seg] if seg is not None else [])],
        content=report,
        **_new_instance(SR_SERIES_NUMBER),
        series_description=f"ct nodule measurements ({DISCLAIMER.lower()})"[:64],
    )


def _finding_record(item: MarkedFinding) -> dict:
    return {
        "finding": item.number,
        "label": item.segment,
        "tracking_uid": item.tracking_uid,
        **item.finding.to_dict(),
    }


def _write_label_map(
    out_dir: Path, uid: str, volume: CtVolume, result: DiagnosisResult, labels: np.ndarray, marked
) -> list[Path]:
    """NRRD label map in the source geometry and the JSON of the findings it numbers."""
    import SimpleITK as sitk

    nrrd, record = out_dir / f"{uid}.findings.nrrd", out_dir / f"{uid}.findings.json"
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("NrrdImageIO")  # the temporary file's name has no .nrrd to guess it from
    writer.UseCompressionOn()

    def write(tmp: Path) -> None:
        writer.SetFileName(str(tmp))
        writer.Execute(image_on_grid(labels, volume.geometry))

    atomic_write_with(nrrd, write)
    atomic_write_text(
        record,
        json.dumps(
            {
                "series_uid": volume.series_uid,
                "source": volume.source,
                "label_map": nrrd.name,
                "note": f"{DISCLAIMER}. Each finding's voxels carry its 'label' in the label map; the input has no "
                "DICOM instances to reference, so there is no DICOM Segmentation.",
                "provenance": dict(result.provenance),
                "findings": [_finding_record(item) for item in marked],
            },
            indent=2,
        ),
    )
    return [nrrd, record]
