"""The library names settings (``InferenceOptions.workers``); what the CLI prints names the options
that set them, from the one table in cli/option_names.py."""

from __future__ import annotations

import logging

import typer

from cli.main import app
from cli.option_names import OPTION_NAMES, name_options, name_options_in_logs
from ct_pipeline.errors import BadInputError
from tests.helpers.cli_process import REPO, error_line, run_ct


def _all_options() -> set[str]:
    def walk(command):
        yield from (name for param in command.params for name in param.opts)
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)

    return set(walk(typer.main.get_command(app)))


def test_every_option_in_the_table_exists():
    assert set(OPTION_NAMES.values()) - _all_options() == set()


def test_every_setting_in_the_table_is_one_the_library_names():
    source = "\n".join(path.read_text() for path in (REPO / "ct_pipeline").rglob("*.py"))
    assert [setting for setting in OPTION_NAMES if setting not in source] == []


def test_settings_become_options_and_other_words_stay():
    assert name_options("InferenceOptions.workers 9 is more than the 2 CPUs; see DiagnosisConfig.hu_range") == (
        "--concurrent-batches 9 is more than the 2 CPUs; see DiagnosisConfig.hu_range"
    )
    assert name_options("PrepcacheConfig.workers 0: need at least 1") == "--workers 0: need at least 1"


def test_an_error_line_names_the_option(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise BadInputError("InferenceOptions.workers 0: expected a whole number >= 1")

    monkeypatch.setattr("ct_pipeline.apps.diagnose.check_outputs", refuse)
    result = run_ct("diagnose", tmp_path / "ct.mhd", "--device", "cpu")
    assert result.exit_code == 2
    assert error_line(result) == "error: --concurrent-batches 0: expected a whole number >= 1"


def test_a_warning_names_the_option(caplog):
    name_options_in_logs()
    name_options_in_logs()  # once per process, however often the CLI starts in it
    with caplog.at_level(logging.WARNING):
        logging.getLogger("ct_pipeline.threads").warning("%s %d is more than the CPUs", "InferenceOptions.workers", 9)
    assert caplog.messages == ["--concurrent-batches 9 is more than the CPUs"]
