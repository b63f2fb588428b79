"""How ``diagnose`` runs: the algorithm's parameters and how the networks are executed.

Two frozen configs, validated on construction:

* :class:`DiagnosisConfig` -- what is computed (thresholds, the lung restriction, merging).
  Its defaults reproduce the book's chapter-14 pipeline (threshold 0.5, one erosion, 3D
  components, mass-weighted centres) and add the lung restriction and duplicate merging.
* :class:`InferenceOptions` -- how the networks run (device, precision, memory format); they
  change speed, and results only within the checked tolerance of reduced precision.

``book_style()`` of each gives what the book's own code does: every slice, fp32, contiguous
memory, batches of 4, no merging -- the same-run baseline of the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ct_pipeline.errors import BadInputError
from ct_pipeline.precision import PRECISIONS

# The test-time flip counts: each set is a group of mirrors (see classify.FLIPS), so the mean
# probability is itself unchanged by any mirror of the set.
CLASSIFIER_FLIPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class DiagnosisConfig:
    """Parameters of segmentation, grouping, classification and merging.

    Attributes:
        seg_threshold: U-Net probability above which a pixel is "nodule" (book: 0.5).
        erosion_iterations: binary erosions of the thresholded mask before labelling (book: 1).
        keep_eroded_away: a component of the mask that the erosion removes entirely (a thin or
            small nodule) is still a candidate (the book drops it, so a nodule the mask touched
            could give no candidate at all).
        min_candidate_diameter_mm: candidates whose segmented voxels make a sphere smaller than
            this are not classified (the book keeps every component). Specks of one or two
            voxels are most of what ``keep_eroded_away`` adds: 1.5 mm dropped 30% of the real
            test CT's candidates and, on the six #20 quality runs (two phantom families), no
            nodule's only candidate and no CPM (2 mm lost one nodule's).
        confident_threshold / confidence_weight: the detection score that ranks findings (the
            LUNA16 CSV's probability, so the FROC) is ``nodule_prob * (1 - w + w * f)``, with ``f``
            the share of the candidate's mask component where the U-Net's probability is above
            ``confident_threshold`` and ``w`` the weight (0: the classifier's probability alone,
            as the book). Measured in #20 on two sets of trained models (the demo's; quality run
            standard seed 0): CPM 0.640 -> 0.691 and 0.554 -> 0.714 with 0.99 (0.657 and 0.679
            with 0.9; with weight 1, 0.646 and 0.589).
        smallest_nodule_mm: the detection score of a candidate whose equivalent diameter is
            below this is scaled by diameter / this: LUNA16 counts nodules from 3 mm, and smaller
            mask components are mostly specks (0: off, as the book). Chosen on validation in #30
            (standard seed 0, the recipe's models: validation CPM 0.723 -> 0.750 with 3 mm,
            0.723 with 4, 0.696 with 5); on its 40-scan test set 0.710 -> 0.730.
        hu_range: HU clipping of every network input (book: -1000..1000).
        nodule_threshold: findings at or above it are nodules: they get a malignancy estimate,
            a line in the console table and a picture in the report.
        merge_fraction: merge two candidates when their centres are closer than this fraction
            of the larger one's diameter (mm); the more probable one stays. 0 keeps every
            candidate (the book). 0.75 merged the one duplicate among the real test CT's
            findings above 0.5 (two pieces of an 11 mm lesion, 7 mm apart) and nothing else there.
            The real CT's other duplicates, three pieces (1.5-4 mm) on slice 34 of the 7.2 mm
            finding on slices 29-32, lie 10-10.5 mm from its centre across a slice the U-Net left
            empty: 1.5 would fold them (15 -> 12 findings >= 0.5 without a budget), but the budget
            already leaves them unclassified (ranks > 400), and a reach of 1.5 diameters is not
            measured where nodules have neighbours (``ct synth`` keeps them >= 2 diameters apart).
        max_candidates: the candidate budget: classify only the best this many candidates of a
            scan, ranked by the U-Net's output alone
            (:func:`~ct_pipeline.diagnosis.candidates.budget_order`); the others are not
            findings (counted in ``DiagnosisResult.n_not_classified``). 0: classify every one
            (the book). 400, measured (``benchmarks.bench_budget``): the real test CT's 3,568
            candidates hold the book's 4 confident findings at ranks 4-252, and 20 ``ct synth``
            validation series (10 standard, 10 site-b, U-Nets trained by the recipe) every true
            nodule's best candidate at rank <= 238 (165-1,047 candidates a scan). At 400 the real
            CT classifies 11% of its candidates and keeps 5 findings >= 0.5 (15 without), the
            book's 4 among them; 200 lost a 4 mm phantom nodule, 100 also a 7 mm one. With the
            recipe's seg and cls models on those 10 site-b scans (330-1,047 candidates): CPM 0.516
            and candidate recall 23/25 with 400 and without a budget, 3,825 crops against 6,999.
        restrict_to_lungs: run the U-Net only around the lungs (an HU-threshold lung mask,
            dilated by ``lung_margin_mm``); candidates outside that region are not reported.
        lung_margin_mm: how far beyond the air-filled lung the region reaches, so that nodules
            on the lung wall and the mediastinum keep all their voxels.
        lung_hu_threshold: voxels below it (on a 4x4-pixel average) count as air.
        classifier_flips: test-time augmentation: the nodule and malignancy probabilities are the
            mean over this many mirrored copies of each crop (:data:`~ct_pipeline.diagnosis.classify.FLIPS`):
            1 off (the book), 2 + mirrored along col, 4 + along row and both (every in-plane
            mirror), 8 + each of those along index. The copies go through the network in the same
            forward pass (``cls_batch_size`` crops make batches of ``classifier_flips`` times as many),
            so the classifiers' time grows about ``classifier_flips``-fold.
        seg_batch_size: slices per U-Net batch (per worker: memory grows with it, speed hardly).
        cls_batch_size: crops per classifier batch (per worker).
    """

    seg_threshold: float = 0.5
    erosion_iterations: int = 1
    keep_eroded_away: bool = True
    min_candidate_diameter_mm: float = 1.5
    confident_threshold: float = 0.99
    confidence_weight: float = 0.5
    smallest_nodule_mm: float = 3.0
    hu_range: tuple[float, float] = (-1000.0, 1000.0)
    nodule_threshold: float = 0.5
    merge_fraction: float = 0.75
    max_candidates: int = 400
    classifier_flips: int = 1
    restrict_to_lungs: bool = True
    lung_margin_mm: float = 15.0
    lung_hu_threshold: float = -400.0
    seg_batch_size: int = 1
    cls_batch_size: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "hu_range", tuple(float(v) for v in self.hu_range))
        for setting, value in (
            ("DiagnosisConfig.seg_threshold", self.seg_threshold),
            ("DiagnosisConfig.nodule_threshold", self.nodule_threshold),
        ):  # the setting's full name: the CLI names its option instead (cli/option_names.py)
            if not 0.0 <= value <= 1.0:
                raise BadInputError(f"{setting} {value} is not a probability; give a value in [0, 1], e.g. 0.5")
        if self.erosion_iterations < 0:
            raise BadInputError(f"erosion_iterations = {self.erosion_iterations} must be >= 0 (the book uses 1)")
        # `not x >= 0` also refuses NaN; an infinite reach would merge every candidate into one.
        if not 0 <= self.merge_fraction < math.inf:
            raise BadInputError(
                f"merge fraction {self.merge_fraction} must be a finite number >= 0 (0 turns merging off)"
            )
        if self.max_candidates < 0:
            raise BadInputError(
                f"candidate budget {self.max_candidates} must be a whole number >= 0 (0 classifies every candidate)"
            )
        if self.classifier_flips not in CLASSIFIER_FLIPS:
            raise BadInputError(
                f"DiagnosisConfig.classifier_flips {self.classifier_flips} is not one of "
                f"{', '.join(map(str, CLASSIFIER_FLIPS))} (mirrored copies per crop; 1 is off)"
            )
        if self.min_candidate_diameter_mm < 0:
            raise BadInputError(f"minimum candidate diameter {self.min_candidate_diameter_mm} mm must be >= 0")
        if not 0 <= self.lung_margin_mm < math.inf:
            raise BadInputError(f"lung margin {self.lung_margin_mm} mm must be a finite number >= 0, e.g. 15")
        if self.seg_batch_size < 1 or self.cls_batch_size < 1:
            raise BadInputError(
                f"batch sizes must be >= 1, got {self.seg_batch_size} slices and {self.cls_batch_size} crops"
            )
        if not 0.0 <= self.smallest_nodule_mm < math.inf:
            raise BadInputError(f"smallest nodule {self.smallest_nodule_mm} mm must be a finite number >= 0 (0: off)")
        if not 0.0 <= self.confidence_weight <= 1.0 or not 0.0 < self.confident_threshold < 1.0:
            raise BadInputError(
                f"confidence weight {self.confidence_weight} must be in [0, 1] and the confident threshold "
                f"{self.confident_threshold} in (0, 1)"
            )
        if len(self.hu_range) != 2 or not self.hu_range[0] < self.hu_range[1]:
            raise BadInputError(f"hu_range {self.hu_range} must be (low, high) with low < high")

    @classmethod
    def book_style(cls, **overrides) -> DiagnosisConfig:
        """The book's pipeline: every slice, no merging, batches of 4 (its default)."""
        return replace(
            cls(
                restrict_to_lungs=False,
                merge_fraction=0.0,
                keep_eroded_away=False,
                confidence_weight=0.0,
                smallest_nodule_mm=0.0,
                min_candidate_diameter_mm=0.0,
                max_candidates=0,
                classifier_flips=1,
                seg_batch_size=4,
                cls_batch_size=4,
            ),
            **overrides,
        )


@dataclass(frozen=True)
class InferenceOptions:
    """How the networks execute.

    Attributes:
        device: "cpu", "cuda", "cuda:1", or "auto" (cuda when available).
        precision: "auto": :func:`~ct_pipeline.devices.resolve_precision` decides per network and
            device: bf16 on a CPU with AVX512-BF16 or AMX (1.6x faster U-Net, 1.4x faster
            classifier on the 2-core test EPYC; the real test CT keeps its findings >= 0.9),
            fp32 on other CPUs; on GPUs the classifiers in bf16, the U-Net in fp32.
            "fp32", "bf16", "fp16" (GPU) force one for all.
        classifier_precision: the nodule and malignancy classifiers' precision where it should
            differ from ``precision`` (None: the same), e.g. fp32 for probabilities that do not
            depend on the CPU's bf16 kernels.
        channels_last: channels-last memory format; None: on (measured faster for both nets).
        fold_batchnorm: run the U-Net with its BatchNorms folded into the convolutions
            (same outputs to float rounding, ~20% faster on the CPU).
        workers: batches run at the same time, each single-threaded; None: one per thread of
            the CPU budget (:mod:`ct_pipeline.threads`), 1 on a GPU. On the 2-core test machine two single-threaded workers did
            the same work with 30-45% less CPU time than one batch on two OpenMP threads,
            whose threads spin while they wait for each other.
        threads: the CPU thread budget (None: the process's allocation, see :mod:`ct_pipeline.threads`).
        release_memory: while the networks run, let freed activations go back to the system
            and trim the heaps between stages (glibc only; see :mod:`ct_pipeline.diagnosis.runtime`):
            ~0.2 GB less peak memory on the real 512x512 test CT for ~4 s of page faults.
        trust_model: load a TorchScript model that ``ct models export`` did not write (it runs its code).
    """

    device: str = "auto"
    precision: str = "auto"
    classifier_precision: str | None = None
    channels_last: bool | None = None
    fold_batchnorm: bool = True
    workers: int | None = None
    threads: int | None = None
    release_memory: bool = True
    trust_model: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BadInputError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.classifier_precision is not None and self.classifier_precision not in PRECISIONS:
            raise BadInputError(f"--cls-precision {self.classifier_precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.workers is not None and self.workers < 1:
            raise BadInputError(f"InferenceOptions.workers {self.workers}: expected a whole number >= 1")
        if self.threads is not None and self.threads < 1:
            raise BadInputError(f"InferenceOptions.threads {self.threads}: expected a whole number of CPU threads >= 1")

    @classmethod
    def book_style(cls, device: str = "auto") -> InferenceOptions:
        """The book's way: fp32, contiguous memory, the networks as trained, one batch at a time."""
        return cls(
            device=device, precision="fp32", channels_last=False, fold_batchnorm=False, workers=1, release_memory=False
        )
