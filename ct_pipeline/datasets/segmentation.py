"""2D slices with context slices above and below, and nodule masks, for the segmentation U-Net.

Training (like the book's): each item is an annotated nodule, drawn by cycling through fresh
shuffles of the training series' nodules; a random slice through the nodule (a slice where its
mask has voxels, the book used only the centre slice) and a random ``train_crop`` square inside
the ``train_region`` square centred on the nodule. Every draw of item ``i`` comes from a
generator seeded with (seed, epoch, i), so the samples do not depend on workers or ranks.

Validation: whole slices of the validation series that hold annotated nodules: every slice
with nodule mask, plus every ``val_other_slice_stride``-th other slice so that false positives
are measured too (the book validated on the mask slices only). Series without nodules are left
out. Whole slices need whole volumes while the training cache keeps only the region around the
candidates, so validation reads its own cache entries made with :data:`WHOLE_VOLUME_SPEC` (the
whole volume of series that have a nodule), filled on construction when missing.

Masks: :mod:`ct_pipeline.datasets.masks` (dense voxels of the annotated sphere connected to the
centre). The label of a slice is the union of all the series' nodule masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ct_pipeline.cache import CachedRegion, CropCache, RegionSpec
from ct_pipeline.catalog import Catalog
from ct_pipeline.datasets.masks import DEFAULT_MASK_THRESHOLD_HU, NoduleMask, nodule_mask_box
from ct_pipeline.datasets.regions import (
    SeriesRegions,
    check_rank,
    crop_into,
    cycled_permutations,
    epoch_rng,
    follow_epoch,
    hu_range_ok,
    rank_share,
    select_series,
    shared_epoch_cell,
)
from ct_pipeline.errors import BadDataError, BadInputError
from ct_pipeline.luna16 import CENTER_COLUMNS

# A nodule margin larger than any CT: region_box clips it to the volume, so a series with an
# annotated nodule is kept whole. (A named whole-volume RegionSpec in cache.py would say this better.)
_WHOLE = 1 << 20
WHOLE_VOLUME_SPEC = RegionSpec(crop_irc=(32, 48, 48), nodule_margin_irc=(_WHOLE, _WHOLE, _WHOLE))


@dataclass(frozen=True)
class SegmentationDatasetConfig:
    """Which slices, how they are cut and how an epoch is drawn.

    Attributes:
        split: "train" (random crops around nodules), "val" (whole slices) or "all" (like train).
        context_slices: slices above and below the labelled one (3: 7 input channels).
        train_crop: side of the square training crop in voxels (book: 64).
        train_region: side of the square around the nodule the crop is drawn from (book: 96).
        epoch_size: training items per epoch over all ranks; 0 = each nodule once.
        val_stride: every N-th series (sorted by UID) is validation.
        val_other_slice_stride: validation also takes every N-th slice without nodule mask (0 = none).
        background_share: share of training crops centred on a non-nodule candidate (a vessel,
            the pleura, an airway wall: where a detector fires) instead of a nodule; 0 = the
            book's (nodule crops only). Validation runs on whole slices, so a model that never
            saw those places in training marks them, and its pixel precision there stays low.
        hu_range: HU clip range.
        mask_threshold_hu: mask voxels are denser than this (book: -700).
        seed, rank, world_size: as for the classification dataset.
    """

    split: str = "train"
    context_slices: int = 3
    train_crop: int = 64
    train_region: int = 96
    epoch_size: int = 3000
    val_stride: int = 10
    val_other_slice_stride: int = 8
    background_share: float = 0.0
    hu_range: tuple[float, float] = (-1000.0, 1000.0)
    mask_threshold_hu: float = DEFAULT_MASK_THRESHOLD_HU
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.context_slices < 0:
            raise BadInputError(f"context_slices {self.context_slices}: expected 0 or more")
        if not 1 <= self.train_crop <= self.train_region:
            raise BadInputError(
                f"train_crop {self.train_crop} / train_region {self.train_region}: need 1 <= crop <= region"
            )
        if self.epoch_size < 0 or self.val_other_slice_stride < 0:
            raise BadInputError("epoch_size and val_other_slice_stride must be >= 0")
        if not 0.0 <= self.background_share < 1.0:
            raise BadInputError(
                f"--background-share {self.background_share}: expected a share from 0 up to (not including) 1"
            )
        hu_range_ok(self.hu_range)
        check_rank(self.rank, self.world_size)

    @property
    def channels(self) -> int:
        return 2 * self.context_slices + 1

    @property
    def train_spec(self) -> RegionSpec:
        """Training entries: `ct prepcache`'s default spec unless the region must reach further."""
        default = RegionSpec()
        margin = max(default.nodule_margin_irc[1], -(-self.train_region // 2) - default.crop_irc[1] // 2)
        return RegionSpec(crop_irc=default.crop_irc, nodule_margin_irc=(0, margin, margin))


class SegmentationDataset(torch.utils.data.Dataset):
    """Item ``i``: (image float32 (C, H, W) clipped HU, label float32 (1, H, W) in {0, 1}, series UID, slice index).

    Training items are ``train_crop`` squares; validation items are whole slices. Call
    :meth:`set_epoch` before each epoch's iterator.
    """

    def __init__(self, catalog: Catalog, cache: CropCache, config: SegmentationDatasetConfig):
        self.config = config
        self.is_val = config.split == "val"
        series = select_series(catalog, config.split, config.val_stride)
        table = catalog.candidates[catalog.candidates["series_uid"].isin(series)]
        nodules = table[table["is_nodule"] & table["has_annotation"]]
        if len(nodules) == 0:
            raise BadDataError(
                f"the {config.split} split (val_stride {config.val_stride}) has no annotated nodules to segment; "
                "annotations.csv must list nodules of series under the data roots"
            )
        self.series_uids = sorted(set(nodules["series_uid"]))
        self._nodule_uid = nodules["series_uid"].to_numpy()
        self._nodule_xyz = nodules[CENTER_COLUMNS].to_numpy(dtype=np.float64)
        self._nodule_diameter_mm = nodules["diameter_mm"].to_numpy(dtype=np.float64)
        # each nodule's place in its series' mask list (series_masks builds them in table order)
        self._nodule_in_series = nodules.groupby("series_uid", sort=False).cumcount().to_numpy()
        others = table[~table["is_nodule"] & table["series_uid"].isin(self.series_uids)]
        self._background_uid = others["series_uid"].to_numpy()
        self._background_xyz = others[CENTER_COLUMNS].to_numpy(dtype=np.float64)
        spec = WHOLE_VOLUME_SPEC if self.is_val else config.train_spec
        self.regions = SeriesRegions(catalog, cache, self.series_uids, spec)
        self._masks: dict[str, list[NoduleMask]] = {}
        if self.is_val:
            self._val_slices = self._list_val_slices()
        self._epoch_cell = shared_epoch_cell()
        self.set_epoch(0)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_masks": {}}

    # -- the epoch's list --------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's items (workers follow, see ClassificationDataset.set_epoch)."""
        self._epoch_cell[0] = int(epoch)
        self._draw(int(epoch))

    def _draw(self, epoch: int) -> None:
        config = self.config
        self.epoch = epoch
        if self.is_val:
            positions = np.arange(len(self._val_slices))
        else:
            rng = epoch_rng(config.seed, epoch)
            n = len(self._nodule_uid)
            length = config.epoch_size or n
            nodule_of_position = cycled_permutations(rng, n, length)
            # Background positions hold -1 - (a non-nodule candidate's index) instead of a nodule's index.
            n_background = len(self._background_uid)
            if config.background_share > 0 and n_background:
                background = rng.uniform(size=length) < config.background_share
                drawn = cycled_permutations(rng, n_background, int(background.sum()))
                nodule_of_position[background] = -1 - drawn
            self._nodule_of_position = nodule_of_position
            positions = np.arange(len(nodule_of_position))
        self._positions = rank_share(positions, config.rank, config.world_size, equal=not self.is_val)

    def __len__(self) -> int:
        return len(self._positions)

    def _list_val_slices(self) -> list[tuple[str, int]]:
        stride = self.config.val_other_slice_stride
        slices: list[tuple[str, int]] = []
        for uid in self.series_uids:
            region = self.regions.region(uid)
            n_slices = region.volume_shape_irc[0]
            with_mask = np.zeros(n_slices, dtype=bool)
            for mask in self.series_masks(uid):
                lo, hi = mask.start_irc[0], mask.stop_irc[0]
                with_mask[lo:hi] |= mask.mask.any(axis=(1, 2))
            others = np.zeros(n_slices, dtype=bool)
            if stride:
                others[::stride] = True
            slices += [(uid, int(s)) for s in np.flatnonzero(with_mask | others)]
        return slices

    # -- masks -------------------------------------------------------------------------------

    def series_masks(self, series_uid: str) -> list[NoduleMask]:
        """The masks of the series' annotated nodules, in full-volume voxel indices."""
        masks = self._masks.get(series_uid)
        if masks is None:
            region = self.regions.region(series_uid)
            origin = np.asarray(region.origin_irc)
            masks = []
            for k in np.flatnonzero(self._nodule_uid == series_uid):
                center = region.geometry.xyz_to_irc(self._nodule_xyz[k])
                local = nodule_mask_box(
                    region.hu,
                    tuple(center - origin),
                    float(self._nodule_diameter_mm[k]),
                    region.geometry.spacing_xyz,
                    self.config.mask_threshold_hu,
                )
                start = tuple(int(v) for v in np.asarray(local.start_irc) + origin)
                masks.append(NoduleMask(start, local.mask, tuple(float(v) for v in center)))  # type: ignore[arg-type]
            self._masks[series_uid] = masks
        return masks

    def nodule_masks(self, series_uid: str) -> tuple[np.ndarray, np.ndarray]:
        """(bool mask of the whole volume (index, row, col), nodule centres (k, 3) voxel irc).

        Exact for validation series (whole volumes are cached); for training series a nodule
        reaching beyond the cached region is cut at the region's edge.
        """
        if series_uid not in self.regions:
            raise BadInputError(f"series {series_uid} is not among this dataset's series with nodules")
        region = self.regions.region(series_uid)
        out = np.zeros(region.volume_shape_irc, dtype=bool)
        masks = self.series_masks(series_uid)
        for mask in masks:
            mask.paint(out)
        centers = np.array([m.center_irc for m in masks], dtype=np.float64).reshape(-1, 3)
        return out, centers

    def _label(self, series_uid: str, start_irc: tuple[int, int, int], shape_rc: tuple[int, int]) -> np.ndarray:
        label = np.zeros((1, *shape_rc), dtype=bool)
        for mask in self.series_masks(series_uid):
            mask.paint(label, start_irc)
        return label

    # -- items -------------------------------------------------------------------------------

    def sample_window(self, index: int) -> tuple[str, int, tuple[int, int], tuple[int, int]]:
        """Where item ``index`` is cut: (series UID, slice index, (top row, left col), (rows, cols)), volume voxels."""
        follow_epoch(self)
        position = int(self._positions[index])
        if self.is_val:
            uid, slice_index = self._val_slices[position]
            rows, cols = self.regions.region(uid).volume_shape_irc[1:]
            return uid, slice_index, (0, 0), (rows, cols)
        config = self.config
        nodule = int(self._nodule_of_position[position])
        rng = epoch_rng(config.seed, self.epoch, position)
        if nodule < 0:
            uid, slice_index, center = self._background_center(-1 - nodule)
        else:
            uid = str(self._nodule_uid[nodule])
            region = self.regions.region(uid)
            mine = self.series_masks(uid)[int(self._nodule_in_series[nodule])]
            center = np.rint(mine.center_irc).astype(np.int64)
            slices = mine.start_irc[0] + np.flatnonzero(mine.mask.any(axis=(1, 2)))
            slices = slices[[self._context_available(region, int(s)) for s in slices]]
            slice_index = int(rng.choice(slices)) if len(slices) else int(center[0])
        offset = rng.integers(0, config.train_region - config.train_crop + 1, size=2)
        half = config.train_region // 2
        top_left = (int(center[1] - half + offset[0]), int(center[2] - half + offset[1]))
        return uid, slice_index, top_left, (config.train_crop, config.train_crop)

    def _background_center(self, candidate: int) -> tuple[str, int, np.ndarray]:
        """(series UID, slice index, voxel centre irc) of non-nodule candidate ``candidate``."""
        uid = str(self._background_uid[candidate])
        region = self.regions.region(uid)
        center = np.rint(region.geometry.xyz_to_irc(self._background_xyz[candidate])).astype(np.int64)
        lo, hi = region.origin_irc[0], region.origin_irc[0] + region.hu.shape[0] - 1
        return uid, int(np.clip(center[0], lo, hi)), center

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, int]:
        uid, slice_index, top_left, (rows, cols) = self.sample_window(index)
        region = self.regions.region(uid)
        image = np.empty((self.config.channels, rows, cols), dtype=np.float32)
        center = (slice_index, top_left[0] + rows // 2, top_left[1] + cols // 2)
        crop_into(region, np.asarray(center), image, self.config.hu_range)
        label = self._label(uid, (slice_index, *top_left), (rows, cols)).astype(np.float32)
        return torch.from_numpy(image), torch.from_numpy(label), uid, int(slice_index)

    def _context_available(self, region: CachedRegion, slice_index: int) -> bool:
        """Whether every context slice is stored, or lies beyond a volume face (where air is right)."""
        context = self.config.context_slices
        lo, hi = region.origin_irc[0], region.origin_irc[0] + region.hu.shape[0]
        n_slices = region.volume_shape_irc[0]
        return all(
            lo <= s < hi or s < 0 or s >= n_slices for s in range(slice_index - context, slice_index + context + 1)
        )
