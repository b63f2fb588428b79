"""`ct diagnose --dicom-out`: a DICOM SEG and SR that tools we did not write read back as we meant them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.loading.mhd import write_mhd
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import NODULES_IRC, phantom_chest, phantom_geometry, write_models

UID = "1.2.826.0.1.3680043.8.498.7301"


def _dcmqi_tool() -> str:
    found = shutil.which("segimage2itkimage") or str(Path(sys.executable).parent / "segimage2itkimage")
    assert Path(found).is_file(), "dcmqi's segimage2itkimage is missing: make install puts it in .venv (dev extra)"
    return found


def segment_images_on_grid(seg_path: Path, reference: sitk.Image, work: Path) -> dict[int, np.ndarray]:
    """dcmqi's conversion of a SEG, each segment resampled (nearest) onto ``reference``'s grid."""
    out = work / "dcmqi"
    out.mkdir()
    subprocess.run(
        [_dcmqi_tool(), "--inputDICOM", str(seg_path), "--outputDirectory", str(out), "--outputType", "nrrd"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    segments = {}
    for path in out.glob("*.nrrd"):
        image = sitk.ReadImage(str(path))
        onto = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
        segments[int(path.stem)] = sitk.GetArrayFromImage(onto) > 0
    return segments


def reference_image(shape_irc, geometry) -> sitk.Image:
    image = sitk.Image([int(n) for n in shape_irc[::-1]], sitk.sitkUInt8)
    image.SetOrigin(geometry.origin_xyz)
    image.SetSpacing(geometry.spacing_xyz)
    image.SetDirection(geometry.direction)
    return image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = write_models(tmp_path_factory.mktemp("models"), nodule_prob=0.8, malignancy_prob=0.6)
    return [
        "--seg-model",
        paths["seg"],
        "--cls-model",
        paths["cls"],
        "--mal-model",
        paths["mal"],
        "--concurrent-batches",
        "1",
    ]


@pytest.fixture(scope="module")
def written(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    write_dicom_series(phantom_chest(), phantom_geometry(), root / "scan", UID)
    out = root / "objects"
    result = run_ct("diagnose", str(root / "scan"), *map(str, models), "--dicom-out", str(out), "--json", "-q")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout.splitlines()[0]), root


def test_the_seg_has_a_segment_per_nodule_and_dcmqi_gives_back_our_mask(written, tmp_path):
    import highdicom as hd

    out, record, _ = written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.segread(out / f"{UID}.seg.dcm")
    assert seg.number_of_segments == len(NODULES_IRC) == 2
    assert seg.ContentDescription.startswith("Research software")
    assert {seg.get_segment_description(k).segment_label for k in (1, 2)} == {
        "Finding 1 nodule p 0.80 malignancy p 0.60",
        "Finding 2 nodule p 0.80 malignancy p 0.60",
    }
    geometry = phantom_geometry()
    segments = segment_images_on_grid(
        out / f"{UID}.seg.dcm", reference_image(phantom_chest().shape, geometry), tmp_path
    )
    assert sorted(segments) == [1, 2]
    # The phantom's nodules are bright spheres; the hand-set U-Net marks what is above 0 HU.
    bright = phantom_chest() > 0
    for k, mask in segments.items():
        centre = tuple(record["candidates"][k - 1]["center_irc"])
        assert mask[centre] and mask.sum() > 20
        assert (mask <= bright).all()  # every segment voxel is one the U-Net marked
    assert not (segments[1] & segments[2]).any()


def test_the_sr_holds_each_findings_point_measurements_and_the_segments_tracking_ids(written):
    import highdicom as hd

    out, record, _ = written
    sr = hd.sr.srread(out / f"{UID}.sr.dcm")
    seg = hd.seg.segread(out / f"{UID}.seg.dcm")
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 2
    spacing = phantom_geometry().spacing_xyz
    for number, group in enumerate(groups, start=1):
        finding = record["candidates"][number - 1]
        np.testing.assert_allclose(group.roi.value[0], finding["center_xyz"], atol=1e-3)
        assert group.tracking_uid == seg.get_segment_description(number).tracking_uid
        values = {(m.name.meaning, getattr(m.derivation, "meaning", None)): m.value for m in group.get_measurements()}
        assert values[("Nodule probability", None)] == pytest.approx(finding["nodule_prob"], abs=1e-6)
        assert finding["nodule_prob"] == pytest.approx(0.8, abs=4e-3)  # bf16 on CPUs that have it: 8 bits
        assert values[("Probability of cancer", None)] == pytest.approx(finding["malignancy_prob"], abs=1e-6)
        assert finding["malignancy_prob"] == pytest.approx(0.6, abs=4e-3)
        assert values[("Equivalent sphere diameter", None)] == pytest.approx(finding["diameter_mm"], abs=1e-3)
        assert values[("Volume", None)] == pytest.approx(finding["measurement"]["volume_mm3"], abs=1e-3)  # the JSON's
        assert values[("Volume", None)] == pytest.approx(np.pi / 6 * finding["diameter_mm"] ** 3, rel=0.25)
        assert values[("Volume", None)] / np.prod(spacing) == pytest.approx(
            round(values[("Volume", None)] / np.prod(spacing))
        )
        assert values[("Long axis", None)] >= values[("Short axis", None)] > 0
        assert values[("Diameter", "Mean")] == pytest.approx(
            (values[("Long axis", None)] + values[("Short axis", None)]) / 2
        )


def test_an_image_file_gets_a_label_map_in_its_geometry_and_the_json(models, tmp_path):
    geometry = phantom_geometry()
    write_mhd(phantom_chest(), geometry, tmp_path / f"{UID}.mhd")
    out = tmp_path / "objects"
    result = run_ct("diagnose", str(tmp_path / f"{UID}.mhd"), *map(str, models), "--dicom-out", str(out), "-q")
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.dcm"))
    labels = sitk.ReadImage(str(out / f"{UID}.findings.nrrd"))
    assert labels.GetSpacing() == pytest.approx(geometry.spacing_xyz) and labels.GetOrigin() == pytest.approx(
        geometry.origin_xyz
    )
    array = sitk.GetArrayFromImage(labels)
    record = json.loads((out / f"{UID}.findings.json").read_text(encoding="utf-8"))
    assert "Research software" in record["note"]
    for finding in record["findings"]:
        assert array[tuple(finding["center_irc"])] == finding["label"]
        assert finding["measurement"]["n_voxels"] == int((array == finding["label"]).sum())
    assert sorted(tuple(f["center_irc"]) for f in record["findings"]) == sorted(NODULES_IRC)


def test_an_image_file_whose_name_is_no_uid_gets_a_safe_file_name(models, tmp_path):
    write_mhd(phantom_chest(), phantom_geometry(), tmp_path / "patient 1 (baseline).mhd")
    out = tmp_path / "objects"
    result = run_ct(
        "diagnose", str(tmp_path / "patient 1 (baseline).mhd"), *map(str, models), "--dicom-out", str(out), "-q"
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2 and all(" " not in name and "(" not in name for name in written)
