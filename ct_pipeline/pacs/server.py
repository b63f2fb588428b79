"""A DICOMweb server: its URL, credentials from the environment, and an HTTP session with TLS
verification, timeouts and a bounded retry on transient errors."""

from __future__ import annotations

import contextlib
import hashlib
import netrc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ct_pipeline.errors import BadInputError, CtError, NotFoundError

DICOMWEB_ENV = "CT_DICOMWEB"
USER_ENV = "CT_DICOMWEB_USER"
PASSWORD_ENV = "CT_DICOMWEB_PASSWORD"
TOKEN_ENV = "CT_DICOMWEB_TOKEN"
NETRC_ENV = "CT_DICOMWEB_NETRC"

# Worth another try: the server or a proxy was busy or restarting. 4xx are the request's fault.
TRANSIENT_STATUSES = (500, 502, 503, 504)


class PacsError(CtError):
    """The server could not be reached, refused us, or answered what we cannot use (exit code 2)."""


@dataclass(frozen=True)
class DicomwebServer:
    """Where the DICOMweb service is and how to talk to it. Holds no secret: credentials are read
    from the environment when a session opens, so this object may be logged or recorded.

    Attributes:
        url: the service root, e.g. ``http://pacs:8042/dicom-web`` (QIDO, WADO and STOW below it).
        ca_bundle: PEM file of the certificate authorities to trust for https; None: the system's.
        timeout_s: seconds to wait for a connection and for each read.
        retries: further tries after a transient error (5xx, connection refused or reset).
    """

    url: str
    ca_bundle: Path | None = None
    timeout_s: float = 60.0
    retries: int = 3

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInputError(f"--dicomweb {self.url!r} is not an http(s) URL; give e.g. http://pacs:8042/dicom-web")
        if parts.username or parts.password:
            raise BadInputError(
                f"--dicomweb URL has credentials in it; remove them and set {USER_ENV}/{PASSWORD_ENV}, "
                f"{TOKEN_ENV} or a netrc file ({NETRC_ENV}) instead"
            )
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise BadInputError(f"--ca-bundle {self.ca_bundle}: no such file; give a PEM file of trusted CAs")
        if self.timeout_s <= 0 or self.retries < 0:
            raise BadInputError("DICOMweb timeout must be > 0 s and retries >= 0")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def key(self) -> str:
        """A short name of this server for folders (the URL's SHA-256, 16 hex digits)."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]


def credentials(server: DicomwebServer) -> tuple[str, tuple[str, str] | str] | None:
    """("bearer", token), ("basic", (user, password)) or None, from the environment, else from the
    netrc file ``$CT_DICOMWEB_NETRC`` (or ``~/.netrc``) entry of the server's host."""
    if os.environ.get(TOKEN_ENV):
        return "bearer", os.environ[TOKEN_ENV]
    if os.environ.get(USER_ENV):
        return "basic", (os.environ[USER_ENV], os.environ.get(PASSWORD_ENV, ""))
    path = Path(os.environ.get(NETRC_ENV) or Path.home() / ".netrc")
    if not path.is_file():
        if os.environ.get(NETRC_ENV):
            raise BadInputError(f"{NETRC_ENV}={path}: no such file")
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(server.host)
    except (netrc.NetrcParseError, OSError) as err:
        raise BadInputError(f"netrc file {path}: cannot read it ({type(err).__name__}); fix or remove it") from None
    return None if entry is None else ("basic", (entry[0] or "", entry[2] or ""))


def open_client(server: DicomwebServer):
    """A ``dicomweb_client.DICOMwebClient`` on a session with the credentials, TLS verification
    (``ca_bundle`` or the system's CAs), the timeout and a bounded, backed-off retry."""
    import requests
    from dicomweb_client.api import DICOMwebClient
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    session.trust_env = False  # no ~/.netrc or proxy surprises: what we send is what this module chose
    retry = Retry(
        total=server.retries,
        connect=server.retries,
        read=server.retries,
        status=server.retries,
        status_forcelist=TRANSIENT_STATUSES,
        allowed_methods=None,
        backoff_factor=0.2,
        raise_on_status=False,
    )
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.verify = str(server.ca_bundle) if server.ca_bundle is not None else True
    found = credentials(server)
    if found is not None and found[0] == "basic":
        session.auth = found[1]
    elif found is not None:
        session.headers["Authorization"] = f"Bearer {found[1]}"
    client = DICOMwebClient(server.url, session=session, timeout=server.timeout_s)
    client.set_http_retry_params(retry=False)  # the adapter retries, bounded; the client's own would wait minutes
    return client


@contextlib.contextmanager
def talking_to(server: DicomwebServer, doing: str) -> Iterator[None]:
    """Turn the HTTP layer's exceptions into one-line :class:`PacsError` naming the server and the act."""
    import requests

    try:
        yield
    except requests.exceptions.HTTPError as err:
        status = err.response.status_code if err.response is not None else 0
        raise _status_error(server, doing, status) from None
    except requests.exceptions.SSLError as err:
        raise PacsError(
            f"DICOMweb server {server.url}: TLS certificate not trusted while {doing} ({_reason(err)}); "
            "give its CA with --ca-bundle FILE"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise PacsError(
            f"DICOMweb server {server.url} unreachable while {doing} ({_reason(err)}); check the URL, the network "
            "and that the server runs"
        ) from None
    except requests.exceptions.RequestException as err:
        raise PacsError(f"DICOMweb server {server.url} failed while {doing}: {_reason(err)}") from None


def _status_error(server: DicomwebServer, doing: str, status: int) -> CtError:
    if status in (401, 403):
        what = "refused our credentials" if status == 401 else "forbids it"
        return PacsError(
            f"DICOMweb server {server.url} {what} (HTTP {status}) while {doing}; set {USER_ENV}/{PASSWORD_ENV}, "
            f"{TOKEN_ENV} or {NETRC_ENV} to an account allowed to"
        )
    if status == 404:
        return NotFoundError(f"DICOMweb server {server.url}: not found (HTTP 404) while {doing}")
    return PacsError(f"DICOMweb server {server.url} answered HTTP {status} while {doing}")


def _reason(err: Exception) -> str:
    """The innermost cause in a few words: requests' messages repeat the URL and the pool's internals."""
    text = str(err.__context__ or err) if not str(err) else str(err)
    for marker in (
        "Connection refused",
        "timed out",
        "Connection reset",
        "Name or service not known",
        "CERTIFICATE_VERIFY_FAILED",
    ):
        if marker in text:
            return marker.lower().replace("_", " ")
    return type(err).__name__


__all__ = ["DicomwebServer", "PacsError", "credentials", "open_client", "talking_to"]
