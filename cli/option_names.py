"""Which option sets each library setting: the one table that turns the library's setting names into
option names in what the CLI prints (error lines, warnings, the log file).

The library names a setting as its config field, ``InferenceOptions.workers``, which a Python caller
recognises and which no option rename can make stale; the CLI says ``--concurrent-batches`` instead.
Renaming an option means changing it here; ``tests/cli/test_option_names.py`` checks that every option
named here exists and every setting is still one the library names.
"""

from __future__ import annotations

import logging
import re

OPTION_NAMES: dict[str, str] = {
    "InferenceOptions.workers": "--concurrent-batches",
    "InferenceOptions.threads": "--threads",
    "DiagnosisConfig.seg_threshold": "--seg-threshold",
    "DiagnosisConfig.nodule_threshold": "--threshold",
    "DiagnosisConfig.classifier_flips": "--tta",
    "PrepcacheConfig.workers": "--workers",
}

_SETTING = re.compile(r"\b[A-Z][A-Za-z]+\.[a-z_]+\b")


def name_options(text: str) -> str:
    """``text`` with each setting of :data:`OPTION_NAMES` written as its option."""
    return _SETTING.sub(lambda match: OPTION_NAMES.get(match.group(0), match.group(0)), text)


def name_options_in_logs() -> None:
    """From now on, every log record (stderr, --log-file) names options, not settings. Once per process."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "names_options", False):
        return

    def record(*args, **kwargs) -> logging.LogRecord:
        made = make_record(*args, **kwargs)
        message = made.getMessage()
        named = name_options(message)
        if named != message:
            made.msg, made.args = named, None
        return made

    record.names_options = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(record)
