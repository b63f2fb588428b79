"""Security promises: weights-only checkpoint loading, no network, UIDs never paths, escaped HTML.

Two kinds of check: a scan of the source (every torch.load passes weights_only=True, no network
module is imported) so that a new call cannot slip in untested, and end-to-end runs with hostile
input (a DICOM series whose UID is a path and a script; sockets that refuse to connect).
At the top level: the promises hold for the whole source tree, not one package.
"""

from __future__ import annotations

import ast
import json
import socket
from pathlib import Path

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from tests.helpers.cli_process import run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(REPO / "ct_pipeline").rglob("*.py"), *(REPO / "cli").rglob("*.py")])
NETWORK_MODULES = {
    "ssl",
    "requests",
    "httpx",
    "urllib3",
    "aiohttp",
    "ftplib",
    "smtplib",
    "http.client",
    "urllib.request",
    "xmlrpc.client",
    "huggingface_hub",
    "torch.hub",
    "torchvision.datasets.utils",
}
LOCAL_SOCKET_CALLS = {"socket.gethostname"}  # the log files name the node; nothing is sent
DOWNLOADERS = {"load_state_dict_from_url", "download_url_to_file", "urlopen", "urlretrieve", "from_pretrained"}
UNSAFE_LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("dill", "load"),
    ("joblib", "load"),
}


def _dotted(node: ast.AST) -> str:
    """'torch.load' for the call target ``torch.load``; '' for anything that is not a plain name chain."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else keyword.value
    return None


def test_the_source_scan_sees_the_code():
    assert len(SOURCES) > 40
    torch_loads = [
        f"{path.name}:{call.lineno}" for path in SOURCES for call, name in _calls(path) if name == "torch.load"
    ]
    assert torch_loads, "the scan finds the checkpoint loader"


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    offenders = []
    for path in SOURCES:
        for call, name in _calls(path):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                offenders.append(f"{where}: torch.load without weights_only=True")
            if name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") not in (None, False):
                offenders.append(f"{where}: np.load with allow_pickle")
            if tuple(name.rsplit(".", 1)) in UNSAFE_LOADERS:
                offenders.append(f"{where}: {name}")
    assert offenders == []


# The one package that talks to a network: the DICOMweb archive a user names with --dicomweb (#28).
# Nothing else may, and nothing at all downloads models or data on its own.
PACS = REPO / "ct_pipeline" / "pacs"


def test_nothing_imports_a_network_module_or_calls_a_downloader():
    assert (PACS / "server.py").is_file(), "the exemption names a package that exists"
    offenders = []
    for path in SOURCES:
        if path.is_relative_to(PACS):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno}: import {m}" for m in modules if m in NETWORK_MODULES
            ]
        offenders += [
            f"{path.relative_to(REPO)}:{call.lineno}: {name}"
            for call, name in _calls(path)
            if name.rsplit(".", 1)[-1] in DOWNLOADERS
            or name.startswith("torch.hub.")
            or (name.startswith("socket.") and name not in LOCAL_SOCKET_CALLS)
        ]
    assert offenders == []


@pytest.fixture()
def no_network(monkeypatch):
    """Sockets that refuse to connect or resolve: any attempt fails the command."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during a test that forbids it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_hostile_series_uid_from_a_dicom_file_stays_text(tmp_path, no_network):
    """A SeriesInstanceUID of ``../../<script>...`` neither escapes --out/--report nor runs in the page."""
    hostile = "../../<script>alert(1)</script>"
    scan = tmp_path / "in" / "scan"
    write_dicom_series(phantom_chest(), phantom_geometry(), scan, "1.2.3.4", extra_tags={"0020|000e": hostile})
    models = write_models(tmp_path / "models")
    work = tmp_path / "work"
    out, report = work / "out", work / "report"
    args = [
        "diagnose",
        str(scan),
        "--seg-model",
        str(models["seg"]),
        "--cls-model",
        str(models["cls"]),
        "--out",
        str(out),
        "--report",
        str(report),
        "--json",
    ]
    result = run_ct(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["series_uid"] == hostile
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"in", "models", "work"}  # nothing written outside the folders given
    assert all(p.resolve().is_relative_to(work.resolve()) for p in work.rglob("*"))
    result_files = sorted(p.name for p in out.glob("*.json"))
    assert len(result_files) == 1 and "/" not in result_files[0] and "<" not in result_files[0]
    page = (report / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert no_network == []


def test_commands_run_without_any_network_access(tmp_path, no_network):
    models = write_models(tmp_path / "models")
    scan = tmp_path / "scan"
    write_dicom_series(phantom_chest(), phantom_geometry(), scan, "1.2.826.0.1.3680043.8.498.77")
    for args in (
        ["models", "info", str(models["seg"])],
        ["info", str(scan), "--json"],
        [
            "diagnose",
            str(scan),
            "--seg-model",
            str(models["seg"]),
            "--cls-model",
            str(models["cls"]),
            "--report",
            str(tmp_path / "report"),
        ],
    ):
        result = run_ct(*args)
        assert result.exit_code == 0, (args, result.output)
    assert no_network == []
    # the guard itself works: a connection attempt is seen and refused
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("localhost", 9))
    assert len(no_network) == 1
