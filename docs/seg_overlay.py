"""README picture: a finding of `ct diagnose --dicom-out` as a viewer shows it, read by dcmqi.

Usage: python docs/seg_overlay.py CT_DICOM_DIR SEG_FILE SEGMENT OUT_PNG

The SEG is converted with dcmqi's ``segimage2itkimage`` (a tool we did not write), resampled onto
the CT's grid in patient space, and drawn as an outline over the CT slice where the segment is
largest, beside a 60 mm close-up.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def main(ct_dir: str, seg_file: str, segment: str, out_png: str) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ct_pipeline.geometry import image_on_grid
    from ct_pipeline.loading import load_ct

    volume = load_ct(ct_dir)
    reference = image_on_grid(np.zeros(volume.shape_irc, np.uint8), volume.geometry)
    tool = Path(sys.executable).parent / "segimage2itkimage"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [str(tool), "--inputDICOM", seg_file, "--outputDirectory", tmp, "--outputType", "nrrd"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        image = sitk.ReadImage(str(Path(tmp) / f"{segment}.nrrd"))
    mask = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    index = int(mask.sum(axis=(1, 2)).argmax())
    rows, cols = np.nonzero(mask[index])
    centre = (int(rows.mean()), int(cols.mean()))
    half = int(30 / volume.spacing_xyz[0])
    figure, axes = plt.subplots(1, 2, figsize=(10, 5), facecolor="black")
    window = dict(cmap="gray", vmin=-1350, vmax=150)
    for axis, zoom in zip(axes, (False, True)):
        pixels, outline = volume.hu[index], mask[index]
        if zoom:
            r0, c0 = max(centre[0] - half, 0), max(centre[1] - half, 0)
            pixels, outline = (
                pixels[r0 : r0 + 2 * half, c0 : c0 + 2 * half],
                outline[r0 : r0 + 2 * half, c0 : c0 + 2 * half],
            )
        axis.imshow(pixels, **window)
        axis.contour(outline, levels=[0.5], colors="#ff4040", linewidths=1.2)
        axis.set_axis_off()
    axes[0].set_title(f"slice {index}: segment {segment} of the DICOM SEG, read by dcmqi", color="white", fontsize=10)
    axes[1].set_title("60 mm around it (research software, not for clinical use)", color="white", fontsize=10)
    figure.tight_layout()
    figure.savefig(out_png, dpi=90, facecolor="black")
    print(f"wrote {out_png} (slice {index}, {int(mask.sum())} voxels)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
