"""Options of the commands that read series from (and store findings on) a DICOMweb server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_PANEL = "PACS (DICOMweb)"

DicomwebOption = Annotated[
    str | None,
    typer.Option(
        "--dicomweb",
        envvar="CT_DICOMWEB",
        help="DICOMweb service root (e.g. http://pacs:8042/dicom-web): a series UID not under the data roots is "
        "fetched from it once into the cache folder. Credentials come from CT_DICOMWEB_USER/CT_DICOMWEB_PASSWORD, "
        "CT_DICOMWEB_TOKEN or a netrc file (CT_DICOMWEB_NETRC), never from the command line.",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]

CaBundleOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        envvar="CT_DICOMWEB_CA_BUNDLE",
        help="PEM file of the certificate authorities to trust for an https --dicomweb (default: the system's).",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]

StoreOption = Annotated[
    bool,
    typer.Option(
        "--store",
        help="Send the SEG and SR written to --dicom-out to the --dicomweb server (STOW-RS); "
        "what it already has from an earlier run is not sent again.",
        rich_help_panel=_PANEL,
    ),
]


ModalityOption = Annotated[
    str,
    typer.Option(
        "--modality", help="With --all --dicomweb: the series of this modality on the server.", rich_help_panel=_PANEL
    ),
]

StudyDateOption = Annotated[
    str | None,
    typer.Option(
        "--study-date",
        help="With --all --dicomweb: only series of studies dated FROM-TO (YYYYMMDD-YYYYMMDD, inclusive; "
        "either end may be left out).",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]


def series_query(modality: str, study_date: str | None):
    """The library's query of a server's series, from --modality and --study-date."""
    from ct_pipeline.pacs.fetch import SeriesQuery

    return SeriesQuery(modality=modality, study_date=study_date)


def dicomweb_server(url: str | None, ca_bundle: Path | None = None):
    """The library's server description for ``--dicomweb`` (None when not given)."""
    from ct_pipeline.pacs.server import DicomwebServer

    if not url:
        if ca_bundle is not None:
            from ct_pipeline.errors import BadInputError

            raise BadInputError("--ca-bundle is for an https --dicomweb server; give --dicomweb URL too")
        return None
    return DicomwebServer(url, ca_bundle=ca_bundle)
