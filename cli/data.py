"""Commands about data: `ct series list`, `ct info`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.dicomweb_options import CaBundleOption, DicomwebOption, dicomweb_server
from cli.options import AllowUnevenOption, CacheDirOption, DataRootsOption, JsonOption
from cli.output import console, print_json

series_app = typer.Typer(help="Find CT series under the data roots.", no_args_is_help=True)


@series_app.command(
    "list",
    epilog="Example: ct series list --data-root /data/luna16 --json | ct series list --dicomweb http://pacs:8042/dicom-web",
)
def series_list(
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    json_output: JsonOption = False,
    dicomweb: DicomwebOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """List every series under the data roots (LUNA16 .mhd, DICOM, image files), and the CT series on --dicomweb."""
    from ct_pipeline.loading.series_index import list_series_everywhere  # SimpleITK: when it runs
    from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots

    entries = list_series_everywhere(
        resolve_data_roots(data_root), resolve_cache_dir(cache_dir), dicomweb_server(dicomweb, ca_bundle)
    )
    if json_output:
        print_json([e.summary() for e in entries])
        return
    table = Table(title=f"{len(entries)} series")
    for column in ("series UID", "format", "modality", "files", "path"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(entry.series_uid, entry.format, entry.modality, str(entry.n_files), entry.path)
    console().print(table)


def info(
    series: Annotated[str, typer.Argument(help="Series UID under the data roots, a DICOM folder, or an image file.")],
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    series_uid: Annotated[
        str | None, typer.Option("--series", help="Which series, when a DICOM folder holds several.")
    ] = None,
    allow_uneven_spacing: AllowUnevenOption = False,
    json_output: JsonOption = False,
    dicomweb: DicomwebOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """Describe one CT: size, spacing, origin, direction, HU range."""
    from ct_pipeline.loading import LoadOptions, load_ct  # SimpleITK: when it runs
    from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots

    volume = load_ct(
        series,
        data_roots=resolve_data_roots(data_root),
        cache_dir=resolve_cache_dir(cache_dir),
        options=LoadOptions(
            allow_uneven_spacing=allow_uneven_spacing,
            series_uid=series_uid,
            dicomweb=dicomweb_server(dicomweb, ca_bundle),
        ),
    )
    description = volume.describe()
    if json_output:
        print_json(description)
        return
    table = Table(show_header=False, title=f"series {volume.series_uid}")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in description.items():
        if isinstance(value, list):
            value = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        elif isinstance(value, dict):
            value = "; ".join(f"{k}: {v}" for k, v in value.items())
        table.add_row(key, str(value))
    console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(series_app, name="series")
    app.command(
        "info",
        epilog="Examples: ct info /data/dicom/patient1 --json | ct info 1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860 --data-root /data/luna16",
    )(info)
