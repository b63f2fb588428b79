"""A real Orthanc with its DICOMweb plugin, for the PACS tests: started on free localhost ports
with a throw-away storage folder, stopped at the end.

Orthanc comes from Debian's ``orthanc`` and ``orthanc-dicomweb`` packages (``.ci/run`` installs
them). Without them the tests skip, except under ``CI``, where they fail: a PACS test that never
runs in CI is a test that cannot fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))

# Instances of this study are accepted, but the SEG and SR derived from them are refused: a PACS
# whose policy rejects a STOW, for the test of a refused store.
REFUSING_STUDY_UID = "1.2.826.0.1.3680043.8.498.9999"
_REFUSE_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  local modality = string.gsub(dicom.Modality or '', '%s', '')  -- DICOM pads odd-length values
  if dicom.StudyInstanceUID == '{REFUSING_STUDY_UID}' and (modality == 'SEG' or modality == 'SR') then
    return false
  end
  return true
end
"""


def _require(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: `.ci/run` installs orthanc and orthanc-dicomweb with apt)")
    pytest.skip(message + "; apt-get install orthanc orthanc-dicomweb to run it")


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's shared object, as Debian's orthanc-dicomweb package installs it."""
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False).stdout
    except OSError:
        listed = ""
    candidates = [Path(line) for line in listed.splitlines() if "DicomWeb" in line and ".so" in line]
    candidates += [p for d in PLUGIN_DIRS if d.is_dir() for p in sorted(d.glob("libOrthancDicomWeb.so*"))]
    return next((p for p in candidates if p.is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: its REST root (``url``) and its DICOMweb root (``dicomweb``)."""

    url: str
    auth: tuple[str, str] | None = None
    verify: str | bool = True

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def upload(self, paths: Iterable[Path]) -> int:
        """POST each DICOM file to /instances; how many were stored."""
        n = 0
        for path in paths:
            answer = requests.post(
                self.url + "/instances", data=Path(path).read_bytes(), auth=self.auth, timeout=30, verify=self.verify
            )
            answer.raise_for_status()
            n += 1
        return n

    def clear(self) -> None:
        """Delete every patient, so that a test starts from an empty archive."""
        for patient in requests.get(self.url + "/patients", auth=self.auth, timeout=30).json():
            requests.delete(f"{self.url}/patients/{patient}", auth=self.auth, timeout=30).raise_for_status()

    def series_of_modality(self, modality: str) -> list[dict]:
        """QIDO-RS series of ``modality`` (raw JSON), as any DICOMweb client would see them."""
        answer = requests.get(f"{self.dicomweb}/series", params={"Modality": modality}, auth=self.auth, timeout=30)
        answer.raise_for_status()
        return answer.json() if answer.content else []


@contextlib.contextmanager
def running_orthanc(work: Path, users: dict[str, str] | None = None) -> Iterator[Orthanc]:
    """Orthanc on free ports with its storage in ``work``; ``users``: basic-auth accounts (then required)."""
    executable = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
    plugin = dicomweb_plugin()
    if executable is None or plugin is None:
        _require("Orthanc or its DICOMweb plugin is not installed")
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "ct-tests",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "HttpTimeout": 60,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "StableAge": 1,
        "HttpCompressionEnabled": False,
    }
    (work / "refuse.lua").write_text(_REFUSE_LUA, encoding="utf-8")
    config["LuaScripts"] = [str(work / "refuse.lua")]
    (work / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = open(work / "orthanc.log", "wb")
    process = subprocess.Popen([executable, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{http_port}", auth=next(iter(users.items())) if users else None)
    try:
        _wait_for_system(server, process, work)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def self_signed_pem(folder: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (PEM files): (key, certificate)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@contextlib.contextmanager
def tls_front(server: Orthanc, key: Path, cert: Path) -> Iterator[Orthanc]:
    """``server`` behind https on a free port, as a TLS-terminating proxy in front of a PACS would put it.

    Orthanc's own https cannot be used: Debian's Orthanc 1.10 crashes (SIGSEGV) at start when
    SslEnabled is set and the DICOMweb plugin is loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    upstream_port = int(server.url.rsplit(":", 1)[1])
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_relay, args=(context, conn, upstream_port), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield Orthanc(f"https://127.0.0.1:{listener.getsockname()[1]}", auth=server.auth, verify=str(cert))
    finally:
        listener.close()


def _relay(context: ssl.SSLContext, conn: socket.socket, upstream_port: int) -> None:
    try:
        tls = context.wrap_socket(conn, server_side=True)
    except (ssl.SSLError, OSError):
        conn.close()  # the client did not trust us: what the test wants to see
        return
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    with tls, upstream, selectors.DefaultSelector() as selector:
        selector.register(tls, selectors.EVENT_READ)
        selector.register(upstream, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select(timeout=60):
                source = key.fileobj
                target = upstream if source is tls else tls
                try:
                    data = source.recv(65536)
                    while source is tls and tls.pending():  # bytes TLS decrypted but select cannot see
                        data += tls.recv(65536)
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    return
                target.sendall(data)


def _wait_for_system(server: Orthanc, process: subprocess.Popen, work: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with {process.returncode}: {(work / 'orthanc.log').read_text()[-2000:]}"
            )
        try:
            if requests.get(server.url + "/system", auth=server.auth, timeout=2, verify=server.verify).ok:
                return
        except (requests.ConnectionError, requests.exceptions.SSLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer /system within {timeout_s:g} s")
