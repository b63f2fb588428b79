"""`ct prepcache`, `ct cache info`, `ct cache clear`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.dicomweb_options import CaBundleOption, DicomwebOption, dicomweb_server
from cli.options import CacheDirOption, DataRootsOption, JsonOption, WorkersOption
from cli.output import EXIT_SOME_FAILED, console, print_json
from cli.progress import ProgressDisplay
from ct_pipeline.paths import DEFAULT_SIZE_LIMIT_GB

# The commands import the library's heavy parts (pandas, the catalog) when they run, so that
# `ct --help` and the other commands start quickly.

cache_app = typer.Typer(help="See and empty the crop cache.", no_args_is_help=True)

SizeLimitOption = Annotated[
    float, typer.Option("--size-limit-gb", help="Evict the oldest entries beyond this size.", rich_help_panel="Data")
]


def prepcache_command(
    data_root: DataRootsOption = None,
    cache_dir: CacheDirOption = None,
    split: Annotated[str, typer.Option(help="Which series: all, train or val (split by series).")] = "all",
    series: Annotated[list[str] | None, typer.Option("--series", help="Only these series UIDs (repeatable).")] = None,
    shard: Annotated[str | None, typer.Option(help="K/N: this array task's share of the series (K from 0).")] = None,
    workers: WorkersOption = 1,
    val_stride: Annotated[int, typer.Option(help="Every N-th series (sorted by UID) is validation.")] = 10,
    size_limit_gb: SizeLimitOption = DEFAULT_SIZE_LIMIT_GB,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file",
            help="Append one line per series and the warnings to this file (one per array task; a re-run appends).",
            show_default=False,
        ),
    ] = None,
    dicomweb: DicomwebOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """Fill the crop cache from the raw CTs. Idempotent: a killed run picks up where it stopped."""
    from ct_pipeline.logfile import open_log_file
    from ct_pipeline.preemption import StopRequests
    from ct_pipeline.prepcache import PrepcacheConfig
    from ct_pipeline.sharding import Shard

    config = PrepcacheConfig(
        split=split, series=tuple(series or ()), shard=Shard.parse(shard), workers=workers, val_stride=val_stride
    )
    label = "prepcache" if config.shard.count == 1 else f"shard {config.shard}"
    with open_log_file(log_file, label) as log, StopRequests() as stop:
        remote = dicomweb_server(dicomweb, ca_bundle)
        failed = _prepcache(config, data_root, cache_dir, size_limit_gb, log, stop, remote)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _prepcache(config, data_root, cache_dir, size_limit_gb: float, log, stop, dicomweb=None) -> int:
    """Fill the cache; returns how many series failed (each is named on stderr)."""
    from ct_pipeline.atomic import check_writable
    from ct_pipeline.cache import CropCache
    from ct_pipeline.catalog import open_catalog
    from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots
    from ct_pipeline.prepcache import selected_series

    cache_path = resolve_cache_dir(cache_dir)
    check_writable(cache_path, "--cache-dir", is_folder=True)
    catalog = open_catalog(resolve_data_roots(data_root), cache_path, dicomweb=dicomweb, remote_series=config.series)
    cache = CropCache(cache_path, size_limit_gb)
    total = len(selected_series(catalog, config))
    out = console()
    try:
        results = _fill_with_progress(catalog, cache, config, total, log, stop)
    finally:
        cache.close()
    failed = [r.series_uid for r in results if r.failed]
    filled = sum(r.filled and not r.failed for r in results)
    outside = sum(r.n_outside for r in results)
    out.print(
        f"prepcache: {total} series (shard {config.shard}): {filled} filled, {len(results) - filled - len(failed)} already cached"
        + (f", {len(failed)} failed" if failed else "")
        + (f", {outside} candidates outside their volume skipped" if outside else "")
        + f"; cache {cache.directory}"
    )
    if failed:
        log.finished_with(f"{len(failed)} of {total} series failed")
        typer.echo(f"{len(failed)} of {total} series failed: {', '.join(failed)}; the others are cached", err=True)
    return len(failed)


def _fill_with_progress(catalog, cache, config, total: int, log, stop) -> list:
    """prepcache with a progress bar on a terminal; each failure named on stderr as it happens."""
    from ct_pipeline.prepcache import prepcache

    progress = ProgressDisplay.on_stderr(quiet=False)
    finished = 0

    def on_result(result):
        nonlocal finished
        finished += 1
        if result.failed:
            progress.pause()
            typer.echo(f"failed {result.series_uid}: {result.error}", err=True)
        progress.count("prepcache", finished, total)

    progress.count("prepcache", 0, total)
    try:
        return prepcache(catalog, cache, config, progress=on_result, log_file=log, stop=stop)
    finally:
        progress.pause()


@cache_app.command("info", epilog="Example: ct cache info --json")
def cache_info(cache_dir: CacheDirOption = None, json_output: JsonOption = False) -> None:
    """Where the cache is, how many series it holds and how big it is."""
    from ct_pipeline.cache import CropCache
    from ct_pipeline.paths import resolve_cache_dir

    cache = CropCache(resolve_cache_dir(cache_dir))
    stats = cache.stats()
    cache.close()
    if json_output:
        print_json(stats)
        return
    partial = ""
    if stats["partial_files"]:
        partial = (
            f"; {stats['partial_files']} partial files ({stats['partial_bytes'] / 2**20:,.1f} MiB) of fills that "
            "did not finish, or of one running now (`ct cache clear` removes them)"
        )
    console().print(
        f"{stats['directory']}: {stats['series']} series, {stats['regions']} regions, "
        f"{stats['bytes'] / 2**20:,.1f} MiB of {stats['size_limit_bytes'] / 2**30:,.0f} GiB allowed{partial}"
    )


@cache_app.command("clear", epilog="Example: ct cache clear --yes")
def cache_clear(
    cache_dir: CacheDirOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete every cached crop region and partial file (the CT files are not touched)."""
    from ct_pipeline.cache import CropCache
    from ct_pipeline.errors import BadInputError
    from ct_pipeline.paths import resolve_cache_dir

    cache = CropCache(resolve_cache_dir(cache_dir))
    if not yes:
        if not sys.stdin.isatty():
            raise BadInputError(
                f"ct cache clear would delete everything in {cache.directory}; add --yes to confirm without a terminal"
            )
        if not typer.confirm(f"Delete everything in {cache.directory}?"):
            console().print("nothing removed")
            return
    removed = cache.clear()
    cache.close()
    console().print(f"removed {removed} entries from {cache.directory}")


def register(app: typer.Typer) -> None:
    app.command(
        "prepcache",
        epilog="Examples: ct prepcache --data-root /data/luna16 --workers 2 | "
        "ct prepcache --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT "
        "--log-file logs/prepcache-$SLURM_ARRAY_TASK_ID.log",
    )(prepcache_command)
    app.add_typer(cache_app, name="cache")
