"""`ct diagnose`'s options as the library's settings: --book-style presets, the rest as given."""

from __future__ import annotations

from cli.diagnose_cmd import _config, _inference
from cli.options import Precision
from ct_pipeline.diagnosis.config import DiagnosisConfig, InferenceOptions

_TUNING = dict(
    seg_threshold=0.4, threshold=0.6, merge_fraction=1.5, max_candidates=7, tta=4, lung_mask=False, lung_margin=5.0
)
_RUN = dict(device="cpu", precision=Precision.bf16, cls_precision=Precision.fp32, threads=2, trust_model=True)


def test_book_style_keeps_its_presets_but_the_thresholds_and_batch_sizes_given():
    config = _config(True, **_TUNING, batch_size=None, cls_batch_size=2)
    assert config == DiagnosisConfig.book_style(seg_threshold=0.4, nodule_threshold=0.6, cls_batch_size=2)
    assert (config.merge_fraction, config.restrict_to_lungs, config.seg_batch_size) == (0.0, False, 4)
    assert config.max_candidates == 0  # the book classifies every candidate
    assert config.classifier_flips == 1  # and each crop once, whatever --tta says
    inference = _inference(True, **_RUN, concurrent_batches=None)
    assert (inference.precision, inference.workers, inference.threads, inference.trust_model) == ("fp32", 1, 2, True)
    assert inference.channels_last is False and inference.fold_batchnorm is False


def test_without_book_style_every_option_lands_in_its_setting():
    config = _config(False, **_TUNING, batch_size=3, cls_batch_size=None)
    assert config == DiagnosisConfig(
        seg_threshold=0.4,
        nodule_threshold=0.6,
        merge_fraction=1.5,
        max_candidates=7,
        classifier_flips=4,
        restrict_to_lungs=False,
        lung_margin_mm=5.0,
        seg_batch_size=3,
    )
    assert _inference(False, **_RUN, concurrent_batches=3) == InferenceOptions(
        device="cpu", precision="bf16", classifier_precision="fp32", workers=3, threads=2, trust_model=True
    )
