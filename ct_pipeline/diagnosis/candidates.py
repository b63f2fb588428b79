"""Steps 3 and 4: the mask as candidates (erosion, 3D components, centres, sizes), and merging duplicates.

Grouping follows the book's ``groupSegmentationOutput``: erode the thresholded mask once
(``scipy.ndimage.binary_erosion``, 6-connected cross), label 3D components (6-connected), and
take each component's centre of mass weighted by ``clip(hu, -1000, 1000) + 1001``. All of it runs
on the bounding box of the mask, and the centres come from the component voxels alone, so no
float copy of the volume is made.

One change to the book (``keep_eroded_away``, off in ``--book-style``): a component of the mask
that erosion removes entirely (a thin or small one) stays a candidate of its own, so every blob of the thresholded mask yields a candidate;
training's "nodule recall" (the mask touches the nodule) and diagnosis' candidates agree.

Each candidate's diameter is that of the sphere with the volume of its segmented voxels
*before* erosion (the eroded component grown back inside the mask), which is what the U-Net
outlined.

Merging (not in the book): erosion splits one lesion into several components, most of all on
thick slices, and the book reports each of them. :func:`merge_duplicates` keeps the most
probable candidate of every group of candidates closer than ``fraction`` times the larger
one's diameter, in mm.

The budget (not in the book): :func:`budget_order` ranks candidates by what the U-Net already
said about them, so that only the best ``K`` of a scan need the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ct_pipeline.geometry import Geometry


@dataclass(frozen=True, eq=False)
class Candidates:
    """Candidates of one series, as arrays (N = number of candidates).

    Attributes:
        center_irc: (N, 3) float64 centre of mass, voxel (index, row, col).
        center_xyz: (N, 3) float64 the same in patient mm.
        diameter_mm: (N,) equivalent-sphere diameter of the segmented voxels.
        n_voxels: (N,) voxels of the eroded component.
        confident_fraction: (N,) share of the candidate's mask component above the U-Net's
            confident threshold (:func:`confident_fraction`), or None when not computed.
    """

    center_irc: np.ndarray
    center_xyz: np.ndarray
    diameter_mm: np.ndarray
    n_voxels: np.ndarray
    confident_fraction: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.center_irc.shape[0])

    @property
    def crop_center_irc(self) -> np.ndarray:
        """(N, 3) int64: the rounded centres the classifier's crops are centred on (the book's)."""
        return np.rint(self.center_irc).astype(np.int64)

    def take(self, indices: np.ndarray) -> Candidates:
        """The candidates at ``indices``, in that order."""
        return Candidates(
            self.center_irc[indices],
            self.center_xyz[indices],
            self.diameter_mm[indices],
            self.n_voxels[indices],
            None if self.confident_fraction is None else self.confident_fraction[indices],
        )

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the mask's bounding box grown by one voxel (inside the volume), or None if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(max(0, int(hits[0]) - 1), min(mask.shape[axis], int(hits[-1]) + 2)))
    return tuple(box)


def group_candidates(
    mask: np.ndarray,
    hu: np.ndarray,
    geometry: Geometry,
    erosion_iterations: int = 1,
    hu_range: tuple[float, float] = (-1000.0, 1000.0),
    keep_eroded_away: bool = True,
    min_diameter_mm: float = 0.0,
) -> Candidates:
    """Candidates from a thresholded segmentation mask, as the book groups them.

    Args:
        mask: bool (index, row, col), the thresholded U-Net output.
        hu: (index, row, col) HU of the same volume (weights of the centres of mass).
        geometry: the volume's grid, for ``center_xyz``.
        erosion_iterations: binary erosions before labelling (book: 1).
        hu_range: the clipping of HU in the weights (book: -1000..1000, weight = hu + 1001).
        keep_eroded_away: a component that erosion removes entirely stays a candidate (the
            book's code drops it).
        min_diameter_mm: candidates whose segmented voxels make a smaller sphere are dropped
            (0 keeps all, as the book).
    """
    box = _bounding_box(mask)
    if box is None:
        return Candidates.empty()
    if np.prod([s.stop - s.start for s in box]) > 0.75 * mask.size:
        # A view of most of the volume would be copied by scipy anyway: use the array itself.
        box = tuple(slice(0, n) for n in mask.shape)
    # Erosion treats outside the array as background: the box keeps one empty voxel of margin,
    # or ends at the volume's edge where the book's whole-volume erosion sees the same.
    raw = mask[box]
    eroded = ndimage.binary_erosion(raw, iterations=erosion_iterations) if erosion_iterations else raw
    labels, n_labels = _label(eroded)
    del eroded  # the labels say the same; keep memory to the mask and the labels
    n_eroded = n_labels
    if erosion_iterations and keep_eroded_away:
        labels, n_labels = _keep_what_erosion_removed(labels, n_labels, raw)
    if n_labels == 0:
        return Candidates.empty()
    flat = np.flatnonzero(labels)
    label_of = labels.ravel()[flat]
    weight = np.clip(hu[box].ravel()[flat].astype(np.float64), hu_range[0], hu_range[1]) + (1.0 - hu_range[0])
    total = np.bincount(label_of, weights=weight, minlength=n_labels + 1)[1:]
    coords = np.unravel_index(flat, labels.shape)
    center_irc = np.stack(
        [np.bincount(label_of, weights=weight * c, minlength=n_labels + 1)[1:] / total for c in coords], axis=1
    )
    center_irc += np.array([s.start for s in box], dtype=np.float64)
    n_voxels = np.bincount(label_of, minlength=n_labels + 1)[1:]
    # Components put back after erosion are whole components of the mask: nothing to grow back.
    segmented = np.concatenate(
        [_segmented_voxels(labels, n_eroded, raw, erosion_iterations), n_voxels[n_eroded:].astype(np.float64)]
    )
    voxel_mm3 = float(np.prod(geometry.spacing_xyz))
    diameter_mm = np.cbrt(6.0 * segmented * voxel_mm3 / np.pi)
    keep = diameter_mm >= min_diameter_mm
    return Candidates(
        center_irc=center_irc[keep],
        center_xyz=geometry.irc_to_xyz(center_irc[keep]).reshape(-1, 3),
        diameter_mm=diameter_mm[keep],
        n_voxels=n_voxels[keep],
    )


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components; uint16 labels (half the memory of scipy's int32) when they fit."""
    labels = np.empty(mask.shape, dtype=np.uint16)
    try:
        n_labels = ndimage.label(mask, output=labels)
    except RuntimeError:  # more than 65535 components
        labels, n_labels = ndimage.label(mask)
    return labels, int(n_labels)


def _keep_what_erosion_removed(labels: np.ndarray, n_labels: int, raw: np.ndarray) -> tuple[np.ndarray, int]:
    """``labels`` plus, as components of their own, the mask's components that erosion removed whole.

    Erosion separates touching blobs, but it also deletes a thin mask outright: a small nodule
    the U-Net outlined 2 voxels wide, or a faint one, then gave no candidate at all although the
    mask touched it (what training counts as found). Those components come back unchanged.
    """
    raw_labels, n_raw = _label(raw)
    survived = np.zeros(n_raw + 1, dtype=bool)
    survived[raw_labels[labels > 0]] = True
    lost = ~survived
    lost[0] = False
    n_lost = int(lost.sum())
    if n_lost == 0:
        return labels, n_labels
    new_label = np.zeros(n_raw + 1, dtype=np.int64)
    new_label[lost] = n_labels + 1 + np.arange(n_lost)
    if n_labels + n_lost > np.iinfo(labels.dtype).max:
        labels = labels.astype(np.int32)
    where = lost[raw_labels]
    labels[where] = new_label[raw_labels[where]]
    return labels, n_labels + n_lost


def _segmented_voxels(labels: np.ndarray, n_labels: int, raw: np.ndarray, iterations: int) -> np.ndarray:
    """(n_labels,) voxels of ``raw`` each eroded component 1..n_labels grows back to (dilated as it was eroded)."""
    if iterations == 0:
        return np.bincount(labels.ravel(), minlength=n_labels + 1)[1 : n_labels + 1].astype(np.float64)
    counts = np.zeros(n_labels, dtype=np.float64)
    if n_labels == 0:  # find_objects reads max_label=0 as "every label"
        return counts
    for label, found in enumerate(ndimage.find_objects(labels, max_label=n_labels), start=1):
        if found is None:
            continue
        grown = tuple(
            slice(max(0, s.start - iterations), min(n, s.stop + iterations)) for s, n in zip(found, labels.shape)
        )
        component = labels[grown] == label
        counts[label - 1] = np.count_nonzero(ndimage.binary_dilation(component, iterations=iterations) & raw[grown])
    return counts


def merge_duplicates(
    center_xyz: np.ndarray, diameter_mm: np.ndarray, score: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which candidates to keep, and how many each kept one stands for (see :func:`merge_groups`).

    Returns:
        (kept indices in order of decreasing score, (len(kept),) group sizes).
    """
    return kept_of_groups(merge_groups(center_xyz, diameter_mm, score, fraction), score)


def kept_of_groups(owner: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kept candidates of :func:`merge_groups`' ``owner``, in order of decreasing score (ties:
    the lower index first), and how many candidates each stands for."""
    n = len(score)
    order = np.lexsort((np.arange(n), -np.asarray(score, dtype=np.float64)))
    kept = order[owner[order] == order]
    return kept.astype(np.int64), np.bincount(owner, minlength=n)[kept]


def merge_groups(center_xyz: np.ndarray, diameter_mm: np.ndarray, score: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) int64: the kept candidate that stands for each candidate (itself when it is kept).

    Greedy, most probable first: a candidate is dropped when a kept one lies closer than
    ``fraction * max(both diameters)`` mm. Ties in ``score`` keep the lower index.

    Args:
        center_xyz: (N, 3) mm.
        diameter_mm: (N,).
        score: (N,) the order of preference (the nodule probability).
        fraction: 0 keeps everything.
    """
    n = len(score)
    if n == 0 or fraction <= 0:
        return np.arange(n, dtype=np.int64)
    order = np.lexsort((np.arange(n), -np.asarray(score, dtype=np.float64)))
    reach = fraction * float(np.max(diameter_mm))
    pairs = cKDTree(center_xyz).query_pairs(r=reach, output_type="ndarray") if reach > 0 else np.zeros((0, 2), int)
    if len(pairs):
        distance = np.linalg.norm(center_xyz[pairs[:, 0]] - center_xyz[pairs[:, 1]], axis=1)
        limit = fraction * np.maximum(diameter_mm[pairs[:, 0]], diameter_mm[pairs[:, 1]])
        pairs = pairs[distance < limit]
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in pairs:
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    owner = np.full(n, -1, dtype=np.int64)
    for index in order:
        if owner[index] >= 0:
            continue
        owner[index] = index
        for other in neighbours[index]:
            if owner[other] < 0:
                owner[other] = index
    return owner


def confident_fraction(level: np.ndarray, center_irc: np.ndarray) -> np.ndarray:
    """(N,) share of each candidate's mask component the U-Net is confident of.

    ``level`` is :func:`~ct_pipeline.diagnosis.segment.segment_volume`'s uint8 map (0 / 1 above
    the threshold / 2 above the confident threshold); a candidate's component is the
    6-connected component of the un-eroded mask at (or within 2 voxels of) its rounded centre.
    A nodule's component is mostly confident, the loose mask's vessel and wall pieces mostly not.
    """
    centers = np.rint(np.asarray(center_irc, dtype=np.float64)).astype(np.int64).reshape(-1, 3)
    fraction = np.zeros(len(centers), dtype=np.float64)
    if len(centers) == 0:
        return fraction
    box = _bounding_box(level > 0)
    if box is None:
        return fraction
    # Label only the mask's bounding box (as group_candidates does), not the whole volume.
    level = level[box]
    centers = centers - np.array([s.start for s in box], dtype=np.int64)
    labels, n_labels = _label(level > 0)
    # Counted over the mask's voxels only: bincount over the whole box casts it to int64 and
    # float64 weights, 16 bytes a voxel (0.4 GB for the real test CT's box).
    flat = np.flatnonzero(labels)
    label_of = labels.ravel()[flat]
    voxels = np.bincount(label_of, minlength=n_labels + 1).astype(np.float64)
    confident = np.bincount(label_of, weights=level.ravel()[flat] == 2, minlength=n_labels + 1)
    del flat, label_of
    for k, center in enumerate(centers):
        label = _label_near(labels, center)
        if label:
            fraction[k] = confident[label] / voxels[label]
    return fraction


def _label_near(labels: np.ndarray, center: np.ndarray) -> int:
    """The label most voxels within 2 of voxel ``center`` carry (a candidate's centre of mass can
    sit just outside its own component), 0 where there is none."""
    lo, hi = np.clip(center - 2, 0, labels.shape), np.clip(center + 3, 0, labels.shape)
    window = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    found = window[window > 0]
    return int(np.bincount(found).argmax()) if found.size else 0


def component_around(
    mask: np.ndarray, center_irc: np.ndarray, reach_irc: np.ndarray
) -> tuple[tuple[int, int, int], np.ndarray] | None:
    """The mask's 6-connected component at voxel ``center_irc`` (or the one most voxels within 2
    of it belong to), looked for within ``reach_irc`` voxels of it: (first voxel, bool array of its
    bounding box), or None where the mask is empty there. ``mask`` is any array, nonzero = set.
    """
    center = np.asarray(center_irc, dtype=np.int64)
    lo = np.clip(center - np.asarray(reach_irc), 0, mask.shape)
    hi = np.clip(center + np.asarray(reach_irc) + 1, 0, mask.shape)
    labels, _ = _label(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] > 0)
    label = _label_near(labels, center - lo)
    if label == 0:
        return None
    box = ndimage.find_objects(labels, max_label=label)[label - 1]
    start = tuple(int(lo[a] + box[a].start) for a in range(3))
    return start, labels[box] == label  # type: ignore[return-value]


def budget_order(candidates: Candidates) -> np.ndarray:
    """(N,) candidate indices, the most promising first, from the U-Net's output alone.

    The key is ``confident_fraction * diameter_mm`` (the diameter alone without a confident
    fraction): nodules are large and confidently segmented, the loose mask's vessel pieces and
    specks small or unsure. Ties keep the lower index. On the real test CT with the book's weights
    it put the book's 4 confident findings at ranks 4-252 of 3,568, against 1-777 for the
    confident fraction alone and 5-463 for the diameter alone (see ``benchmarks.bench_budget``); on
    10 ``ct synth`` standard series all three put the worst true nodule at rank 237-238. Peak and
    mean U-Net probabilities might rank better, but the segmentation keeps only its 3-level map.
    """
    diameter = np.asarray(candidates.diameter_mm, dtype=np.float64)
    key = diameter if candidates.confident_fraction is None else diameter * candidates.confident_fraction
    # Among equal keys (e.g. no confident voxel at all) the larger first, then the lower index.
    return np.lexsort((np.arange(len(key)), -diameter, -key))
