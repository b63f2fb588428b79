"""3D crops centred on candidates, for the nodule and the malignancy classifiers.

Training epochs are balanced like the book's: positives and negatives are interleaved item by
item in the configured ratio (1:1 by default), each class cycling through fresh shuffles of its
candidates, so every batch holds the ratio and every candidate is seen about equally often.
The epoch's list is a pure function of (seed, epoch); DDP ranks take disjoint contiguous blocks
of it. Validation is every candidate of the validation series once, in table order, unbalanced.

With ``own_share`` > 0 a fixed share of the training items comes from the pipeline's own
candidates (the catalog's ``is_own`` rows, ``ct hard-negatives --with-positives``), spread evenly
the same way, positives at ``own_positive_share`` of them; the other items are the balanced draw
above over the ``candidates.csv`` rows alone. Own rows never join those pools, nor validation.

Crops are HU clipped to ``hu_range``, not normalised (the model's input BatchNorm does that, as
in the book) and not augmented (:func:`~ct_pipeline.datasets.augmentation.augment_batch` runs on
the batch on the training device). Crops reaching past the volume's faces are padded with air
(-1000 HU), never shifted, so the candidate stays at the centre. With ``crop_spacing_mm`` the crops
are resampled on read from the cached native region (sized per series for that many mm) by
:func:`~ct_pipeline.crops.resampled_crop`, the function diagnosis cuts with: about 0.5 ms a crop
against 0.1 ms for a native one (batched fetch, 256x256 series), and no second copy on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ct_pipeline.cache import CropCache, RegionSpec
from ct_pipeline.catalog import Catalog
from ct_pipeline.crops import check_crop_spacing, crop_start_irc, resampled_crop
from ct_pipeline.datasets.regions import (
    SeriesRegions,
    check_rank,
    clip_bounds,
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

MODES = ("nodule", "malignancy")


@dataclass(frozen=True)
class ClassificationDatasetConfig:
    """Which candidates, how they are cut and how an epoch is drawn.

    Attributes:
        split: "train" (balanced epochs), "val" (every candidate once) or "all" (like train).
        mode: "nodule" (label 1 = annotated nodule, 0 = other candidate) or "malignancy"
            (annotated nodules with a known malignancy only; label 1 = malignant).
        crop_irc: crop size in voxels (index, row, col); the book's 32x48x48.
        crop_spacing_mm: the crops' voxel spacing (index, row, col) in mm, resampled from each
            series' native grid (:func:`~ct_pipeline.crops.resampled_crop`); None = native voxels.
        negatives_per_positive: training balance (book: 1.0); 0 = unbalanced random draws.
        epoch_size: items per training epoch over all ranks (``--epoch-size``); 0 = one pass
            over the candidates. Ignored for "val".
        val_stride: every N-th series (sorted by UID) is validation.
        hu_range: HU clip range.
        seed: with the epoch, fixes every draw.
        rank, world_size: this DDP rank's share (training ranks get equal shares).
        own_share: fraction of a training epoch's items drawn from the own candidates (0: none).
        own_positive_share: fraction of the own draws that are positives.
    """

    split: str = "train"
    mode: str = "nodule"
    crop_irc: tuple[int, int, int] = (32, 48, 48)
    crop_spacing_mm: tuple[float, float, float] | None = None
    negatives_per_positive: float = 1.0
    epoch_size: int = 20000
    val_stride: int = 10
    hu_range: tuple[float, float] = (-1000.0, 1000.0)
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    own_share: float = 0.0
    own_positive_share: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInputError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if len(self.crop_irc) != 3 or any(int(n) < 1 for n in self.crop_irc):
            raise BadInputError(f"crop_irc {self.crop_irc}: expected 3 positive voxel counts (index, row, col)")
        if not (math.isfinite(self.negatives_per_positive) and self.negatives_per_positive >= 0):
            raise BadInputError(
                f"negatives_per_positive {self.negatives_per_positive}: expected a number >= 0 (0 = unbalanced)"
            )
        if self.epoch_size < 0:
            raise BadInputError(f"--epoch-size {self.epoch_size}: expected 0 (one pass) or more items")
        if self.crop_spacing_mm is not None:
            object.__setattr__(self, "crop_spacing_mm", check_crop_spacing(self.crop_spacing_mm))
        hu_range_ok(self.hu_range)
        check_rank(self.rank, self.world_size)
        for name in ("own_share", "own_positive_share"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise BadInputError(f"{name} {value}: expected a fraction from 0 to 1")

    @property
    def region_spec(self) -> RegionSpec:
        """The cache entries this dataset reads (the default is what `ct prepcache` fills)."""
        return RegionSpec(
            crop_irc=tuple(int(n) for n in self.crop_irc),  # type: ignore[arg-type]
            crop_spacing_mm=self.crop_spacing_mm,
        )


class ClassificationDataset(torch.utils.data.Dataset):
    """Candidate crops: item ``i`` is (crop float32 (1, *crop_irc) HU, label int64 scalar, table row).

    ``__getitems__`` (DataLoader's batched fetch) cuts a whole batch into one buffer; pass
    ``collate_fn=collate_crops`` to the DataLoader to hand it on without another copy.

    Call :meth:`set_epoch` before each epoch's DataLoader iterator is created.

    Attributes:
        labels: int64 label of each item of this rank's current epoch.
        rows: candidate-table row (``catalog.candidates.index``) of each item.
    """

    def __init__(self, catalog: Catalog, cache: CropCache, config: ClassificationDatasetConfig):
        self.config = config
        series = select_series(catalog, config.split, config.val_stride)
        table = catalog.candidates[catalog.candidates["series_uid"].isin(series)]
        own = table["is_own"].to_numpy(dtype=bool) if "is_own" in table else np.zeros(len(table), dtype=bool)
        if config.split == "val" or config.mode == "malignancy":  # both read candidates.csv's rows only, as before
            table, own = table[~own], own[~own]
        if own.any():  # the own rows go last: the candidates.csv rows keep the item numbers they have without them
            table, own = pd.concat([table[~own], table[own]]), np.sort(own)
        if config.mode == "malignancy":
            table = table[table["is_nodule"] & table["has_annotation"] & table["is_malignant"].notna()]
            labels = table["is_malignant"].astype(bool).to_numpy()
            own = np.zeros(len(table), dtype=bool)
        else:
            labels = table["is_nodule"].to_numpy(dtype=bool)
        if len(table) == 0:
            what = "annotated nodules with a known malignancy" if config.mode == "malignancy" else "candidates"
            raise BadDataError(
                f"the {config.split} split (val_stride {config.val_stride}) has no {what}; "
                + (
                    "malignancy needs annotations_with_malignancy.csv beside the data"
                    if config.mode == "malignancy"
                    else "check the data roots"
                )
            )
        self._uids = sorted(set(table["series_uid"]))
        self._series_code = np.searchsorted(self._uids, table["series_uid"].to_numpy())
        self._centers_xyz = table[CENTER_COLUMNS].to_numpy(dtype=np.float64)
        self._table_rows = table.index.to_numpy(dtype=np.int64)
        self._is_positive = labels
        self._centers_irc = np.zeros((len(table), 3), dtype=np.float64)  # filled per series on first use
        self._voxel_centers = np.zeros((len(table), 3), dtype=np.int64)  # rounded, as the book's crops
        self._local_start = np.zeros((len(table), 3), dtype=np.int64)  # crop start in the region's array
        self._inside = np.zeros(len(table), dtype=bool)  # the crop lies within the stored region
        self._series_ready = np.zeros(len(self._uids), dtype=bool)
        order = np.argsort(self._series_code, kind="stable")
        self._items_of_series = np.split(order, np.flatnonzero(np.diff(self._series_code[order])) + 1)
        self.regions = SeriesRegions(catalog, cache, self._uids, config.region_spec)
        self._ordinary = np.flatnonzero(~own)
        self._positives = np.flatnonzero(labels & ~own)
        self._negatives = np.flatnonzero(~labels & ~own)
        self._own_positives = np.flatnonzero(labels & own)
        self._own_negatives = np.flatnonzero(~labels & own)
        balanced = config.split != "val" and config.negatives_per_positive > 0
        if balanced and (len(self._positives) == 0 or len(self._negatives) == 0):
            missing = "positive" if len(self._positives) == 0 else "negative"
            raise BadDataError(
                f"the {config.split} split has no {missing} {config.mode} examples to balance with; "
                "use negatives_per_positive 0 (unbalanced) or add series"
            )
        if config.split != "val":
            self._check_own_pool()
        self._epoch_cell = shared_epoch_cell()
        self.set_epoch(0)

    def _check_own_pool(self) -> None:
        share, positive_share = self.config.own_share, self.config.own_positive_share
        if share == 0:
            return
        if len(self._own_positives) + len(self._own_negatives) == 0:
            raise BadDataError(
                f"own_share {share:g}, but the {self.config.split} split has none of the pipeline's own candidates; "
                "mine them with `ct hard-negatives --with-positives` on the same --val-stride"
            )
        if positive_share > 0 and len(self._own_positives) == 0:
            raise BadDataError(
                "the own candidates hold no positives (class 1) on the training series; "
                "mine them with `ct hard-negatives --with-positives`, or set own_positive_share 0"
            )
        if positive_share < 1 and len(self._own_negatives) == 0:
            raise BadDataError(
                "the own candidates hold no negatives (class 0) on the training series; set own_positive_share 1"
            )

    # -- the epoch's list --------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's items: the same list on every rank, then this rank's block.

        Workers see the new epoch too (through a shared-memory cell), persistent ones included,
        as long as this is called before the epoch's DataLoader iterator is created.
        """
        self._epoch_cell[0] = int(epoch)
        self._draw(int(epoch))

    def _draw(self, epoch: int) -> None:
        config = self.config
        self.epoch = epoch
        n_all = len(self._table_rows)
        if config.split == "val":
            items = np.arange(n_all)
        else:
            rng = epoch_rng(config.seed, epoch)
            length = config.epoch_size or len(self._ordinary)
            # Which items are own is fixed first; the candidates.csv draw fills the rest from the
            # same generator first, so with no own share this is today's draw exactly.
            own_slot = _spread(length, config.own_share)
            n_ordinary = int((~own_slot).sum())
            items = np.empty(length, dtype=np.int64)
            if config.negatives_per_positive > 0:
                items[~own_slot] = self._balanced(rng, n_ordinary)
            else:
                items[~own_slot] = self._ordinary[cycled_permutations(rng, len(self._ordinary), n_ordinary)]
            if own_slot.any():
                items[own_slot] = self._own_draw(rng, int(own_slot.sum()))
        self._items = rank_share(items, config.rank, config.world_size, equal=config.split != "val")
        self.labels = self._is_positive[self._items].astype(np.int64)
        self.rows = self._table_rows[self._items]

    def _balanced(self, rng: np.random.Generator, length: int) -> np.ndarray:
        return _interleaved(
            rng, length, 1.0 / (1.0 + self.config.negatives_per_positive), self._positives, self._negatives
        )

    def _own_draw(self, rng: np.random.Generator, length: int) -> np.ndarray:
        return _interleaved(rng, length, self.config.own_positive_share, self._own_positives, self._own_negatives)

    def __len__(self) -> int:
        return len(self._items)

    # -- items -------------------------------------------------------------------------------

    def _ready(self, code: int):
        """The series' region, with the voxel centres of its candidates computed on first use."""
        region = self.regions.region(self._uids[code])
        if not self._series_ready[code]:
            mine = self._items_of_series[code]
            self._centers_irc[mine] = region.geometry.xyz_to_irc(self._centers_xyz[mine])
            self._voxel_centers[mine] = np.rint(self._centers_irc[mine])
            size = np.asarray(self.config.crop_irc, dtype=np.int64)
            start = crop_start_irc(self._voxel_centers[mine], self.config.crop_irc) - np.asarray(
                region.origin_irc, dtype=np.int64
            )
            self._local_start[mine] = start
            self._inside[mine] = ((start >= 0) & (start + size <= np.asarray(region.hu.shape))).all(axis=1)
            self._series_ready[code] = True
        return region

    def _crop_into(self, item: int, out: np.ndarray) -> None:
        """Write candidate ``item``'s clipped HU crop into ``out`` (float32, shape crop_irc)."""
        code = int(self._series_code[item])
        region = self._ready(code)
        spacing = self.config.crop_spacing_mm
        if spacing is not None:
            crop = resampled_crop(
                self.regions.array(self._uids[code]),
                self._centers_irc[item],
                self.config.crop_irc,
                region.geometry.spacing_xyz[::-1],
                spacing,
                origin_irc=region.origin_irc,
            )
            np.clip(crop, *self.config.hu_range, out=out)
        elif self._inside[item]:  # the common case, kept to one C-level slice and one pass
            i, r, c = self._local_start[item].tolist()
            depth, rows, cols = self.config.crop_irc
            source = self.regions.array(self._uids[code])[i : i + depth, r : r + rows, c : c + cols]
            np.clip(source, *clip_bounds(self.config.hu_range, source.dtype), out=out, casting="unsafe")
        else:
            crop_into(region, self._voxel_centers[item], out, self.config.hu_range)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        follow_epoch(self)
        item = int(self._items[index])
        crop = np.empty((1, *self.config.crop_irc), dtype=np.float32)
        self._crop_into(item, crop[0])
        return (
            torch.from_numpy(crop),
            torch.tensor(int(self._is_positive[item]), dtype=torch.int64),
            int(self._table_rows[item]),
        )

    def __getitems__(self, indices: list[int]) -> CropBatch:
        """A batch of items (what DataLoader's batched fetch calls), cut into one buffer.

        In a DataLoader worker the buffer is allocated in shared memory, so with
        ``collate_fn=collate_crops`` the batch reaches the training process without another copy.
        """
        follow_epoch(self)
        shape = (len(indices), 1, *self.config.crop_irc)
        crops = torch.empty(shape, dtype=torch.float32)
        if torch.utils.data.get_worker_info() is not None:
            crops.share_memory_()
        buffer = crops.numpy()
        items = self._items[np.asarray(indices, dtype=np.int64)]
        for k, item in enumerate(items):
            self._crop_into(int(item), buffer[k, 0])
        return CropBatch(crops, self._is_positive[items].astype(np.int64), self._table_rows[items])

    @property
    def table_rows(self) -> np.ndarray:
        """Candidate-table row of every candidate of the split (not just this epoch's draw)."""
        return self._table_rows

    @property
    def is_positive(self) -> np.ndarray:
        """Label (True = nodule, or malignant) of every candidate of the split, in ``table_rows`` order."""
        return self._is_positive


def _spread(length: int, share: float) -> np.ndarray:
    """(length,) bool: item i is chosen when floor((i+1) share) > floor(i share). The chosen items
    are spread evenly (1/2 alternates), so any run of items holds the share to within one."""
    index = np.arange(length, dtype=np.float64)
    return np.floor((index + 1) * share + 1e-9) > np.floor(index * share + 1e-9)


def _interleaved(
    rng: np.random.Generator, length: int, positive_share: float, positives: np.ndarray, negatives: np.ndarray
) -> np.ndarray:
    """``length`` items, positives spread evenly at ``positive_share``, each class cycling
    through fresh shuffles of its items (positives drawn first: the generator's order is fixed)."""
    positive = _spread(length, positive_share)
    items = np.empty(length, dtype=np.int64)
    items[positive] = positives[cycled_permutations(rng, len(positives), int(positive.sum()))]
    items[~positive] = negatives[cycled_permutations(rng, len(negatives), int((~positive).sum()))]
    return items


def median_spacing_irc_mm(catalog: Catalog, series_uids: Sequence[str]) -> tuple[float, float, float]:
    """The median slice spacing and the median pixel spacing of ``series_uids``, (z, y, x) in mm.

    nnU-Net's choice of a data set's working spacing; rows and columns share one median (pixels
    are square in CT), read from headers only.

    Raises:
        BadDataError: no series, or a header is unreadable.
    """
    from ct_pipeline.loading import entry_spacing_xyz  # loaders only when asked

    if not series_uids:
        raise BadDataError("no training series to take the median crop spacing from; check the data roots")
    spacings_xyz = np.array([entry_spacing_xyz(catalog.entries[uid]) for uid in series_uids], dtype=np.float64)
    # rounded to a micrometre: what the checkpoint and the log show stays readable
    pixel = round(float(np.median(spacings_xyz[:, :2])), 3)
    return round(float(np.median(spacings_xyz[:, 2])), 3), pixel, pixel


class CropBatch(Sequence):
    """What ``__getitems__`` returns: the batch's crops in one tensor; indexing gives the items."""

    def __init__(self, crops: torch.Tensor, labels: np.ndarray, rows: np.ndarray):
        self.crops, self.labels, self.rows = crops, labels, rows

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k):  # type: ignore[override]
        return self.crops[k], torch.tensor(int(self.labels[k]), dtype=torch.int64), int(self.rows[k])


def collate_crops(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DataLoader ``collate_fn`` for :class:`ClassificationDataset`: (crops (N, 1, ...), labels (N,), rows (N,)).

    Same result as the default collate, without copying a :class:`CropBatch` once more.
    """
    if isinstance(batch, CropBatch):
        return batch.crops, torch.from_numpy(batch.labels), torch.from_numpy(batch.rows)
    return torch.utils.data.default_collate(batch)
