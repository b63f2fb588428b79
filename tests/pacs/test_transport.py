"""Credentials and transport: basic auth from the environment or a netrc file (never the command
line, never in a file ct writes), bearer tokens, https with certificate verification, and a
bounded retry on transient errors."""

from __future__ import annotations

import http.server
import threading

import pytest

from ct_pipeline.dicom_writer import write_dicom_series
from ct_pipeline.pacs.server import DicomwebServer, open_client
from tests.helpers.cli_process import error_line, run_ct
from tests.helpers.diagnosis_tiny import phantom_chest, phantom_geometry, write_models
from tests.helpers.orthanc_server import running_orthanc, self_signed_pem, tls_front

UID = "1.2.826.0.1.3680043.8.498.7405"
USER, PASSWORD = "radiology", "Wd7-secret-Qx9"


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """An Orthanc that wants basic auth, holding the phantom series."""
    work = tmp_path_factory.mktemp("locked")
    with running_orthanc(work, users={USER: PASSWORD}) as server:
        write_dicom_series(phantom_chest(), phantom_geometry(), work / "scan", UID)
        server.upload(sorted((work / "scan").glob("*.dcm")))
        yield server


@pytest.fixture(autouse=True)
def _no_netrc(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc of the developer's (conftest clears CT_DICOMWEB_*)


def test_without_credentials_the_server_refuses_with_401(locked, tmp_path):
    result = run_ct("info", UID, "--dicomweb", locked.dicomweb, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: DICOMweb server {locked.dicomweb} refused our credentials (HTTP 401) while looking up series {UID}; "
        "set CT_DICOMWEB_USER/CT_DICOMWEB_PASSWORD, CT_DICOMWEB_TOKEN or CT_DICOMWEB_NETRC to an account allowed to"
    )


def test_a_wrong_password_is_refused_too(locked, tmp_path, monkeypatch):
    monkeypatch.setenv("CT_DICOMWEB_USER", USER)
    monkeypatch.setenv("CT_DICOMWEB_PASSWORD", "not-it")
    result = run_ct("info", UID, "--dicomweb", locked.dicomweb, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 2 and "(HTTP 401)" in error_line(result)


def test_a_ca_bundle_that_does_not_exist_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "missing.pem"
    result = run_ct("info", UID, "--dicomweb", "https://127.0.0.1:9/dicom-web", "--ca-bundle", missing)
    assert result.exit_code == 2
    assert error_line(result) == f"error: --ca-bundle {missing}: no such file; give a PEM file of trusted CAs"


def test_credentials_in_the_url_are_refused(locked):
    url = locked.dicomweb.replace("http://", f"http://{USER}:{PASSWORD}@")
    result = run_ct("info", UID, "--dicomweb", url)
    assert result.exit_code == 2
    assert PASSWORD not in result.output
    assert error_line(result).startswith("error: --dicomweb URL has credentials in it; remove them and set")


def test_a_netrc_file_gives_the_credentials(locked, tmp_path, monkeypatch):
    netrc = tmp_path / "pacs.netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("CT_DICOMWEB_NETRC", str(netrc))
    result = run_ct("info", UID, "--dicomweb", locked.dicomweb, "--cache-dir", tmp_path / "cache", "--json")
    assert result.exit_code == 0, result.output


def test_the_password_appears_in_no_output_log_result_or_provenance(locked, tmp_path, monkeypatch):
    monkeypatch.setenv("CT_DICOMWEB_USER", USER)
    monkeypatch.setenv("CT_DICOMWEB_PASSWORD", PASSWORD)
    paths = write_models(tmp_path / "models", nodule_prob=0.8, malignancy_prob=0.6)
    result = run_ct(
        "--debug",
        "diagnose",
        UID,
        "--seg-model",
        paths["seg"],
        "--cls-model",
        paths["cls"],
        "--concurrent-batches",
        "1",
        "--dicomweb",
        locked.dicomweb,
        "--dicom-out",
        tmp_path / "objects",
        "--store",
        "--out",
        tmp_path / "results",
        "--report",
        tmp_path / "report",
        "--csv",
        tmp_path / "all.csv",
        "--log-file",
        tmp_path / "run.log",
        "--cache-dir",
        tmp_path / "cache",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("stored on ") for line in result.stderr.splitlines()) == 2
    assert PASSWORD not in result.output
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "models" not in p.parts]
    assert len(written) > 10 and (tmp_path / "results" / f"{UID}.json").is_file()
    holding = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
    assert holding == []


def test_a_bearer_token_goes_in_the_authorization_header_only(monkeypatch):
    monkeypatch.setenv("CT_DICOMWEB_TOKEN", "tok-123")
    server = DicomwebServer("https://pacs.example.org/dicom-web")
    client = open_client(server)
    assert client._session.headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in repr(server)


def test_https_is_verified_and_a_ca_bundle_makes_a_private_ca_trusted(orthanc, tmp_path):
    key, cert = self_signed_pem(tmp_path)
    orthanc.clear()
    with tls_front(orthanc, key, cert) as server:
        write_dicom_series(phantom_chest(), phantom_geometry(), tmp_path / "scan", UID)
        server.upload(sorted((tmp_path / "scan").glob("*.dcm")))
        refused = run_ct("info", UID, "--dicomweb", server.dicomweb, "--cache-dir", tmp_path / "cache")
        assert refused.exit_code == 2
        assert error_line(refused) == (
            f"error: DICOMweb server {server.dicomweb}: TLS certificate not trusted while looking up series {UID} "
            "(certificate verify failed); give its CA with --ca-bundle FILE"
        )
        trusted = run_ct(
            "info", UID, "--dicomweb", server.dicomweb, "--ca-bundle", cert, "--cache-dir", tmp_path / "cache"
        )
        assert trusted.exit_code == 0, trusted.output


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` requests, then an empty QIDO result."""

    failures = 0
    seen = 0

    def do_GET(self):
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self.send_response(503)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "failures, expected_seen, expected_end", [(2, 3, "is neither under the data roots nor on"), (50, 4, "HTTP 503")]
)
def test_transient_errors_are_retried_a_bounded_number_of_times(failures, expected_seen, expected_end, tmp_path):
    handler = type("Flaky", (_Flaky,), {"failures": failures, "seen": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
        result = run_ct("info", UID, "--dicomweb", url, "--cache-dir", tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.exit_code == 2
    assert handler.seen == expected_seen  # 1 try + at most 3 retries (DicomwebServer.retries)
    assert expected_end in error_line(result)


class _Forbidding(http.server.BaseHTTPRequestHandler):
    """A gateway in front of a PACS that knows the account but does not let it read: 403 (Orthanc itself has no 403)."""

    def do_GET(self):
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_403_is_answered_as_forbidden(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidding)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
        result = run_ct("info", UID, "--dicomweb", url, "--cache-dir", tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.exit_code == 2
    assert error_line(result).startswith(
        f"error: DICOMweb server {url} forbids it (HTTP 403) while looking up series {UID}; set"
    )
