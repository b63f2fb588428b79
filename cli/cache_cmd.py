"""`ct prepcache`, `ct cache info`, `ct cache clear`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli.options import CacheDirOption, DataRootsOption, JsonOption
from cli.output import console, print_json
from ct_pipeline.cache import DEFAULT_SIZE_LIMIT_GB, CropCache
from ct_pipeline.catalog import open_catalog
from ct_pipeline.paths import resolve_cache_dir, resolve_data_roots
from ct_pipeline.prepcache import PrepcacheConfig, prepcache, selected_series
from ct_pipeline.sharding import Shard

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
    workers: Annotated[int, typer.Option(help="Processes reading CTs in parallel.")] = 1,
    val_stride: Annotated[int, typer.Option(help="Every N-th series (sorted by UID) is validation.")] = 10,
    size_limit_gb: SizeLimitOption = DEFAULT_SIZE_LIMIT_GB,
) -> None:
    """Fill the crop cache from the raw CTs. Idempotent: a killed run picks up where it stopped."""
    config = PrepcacheConfig(
        split=split, series=tuple(series or ()), shard=Shard.parse(shard), workers=workers, val_stride=val_stride
    )
    cache_path = resolve_cache_dir(cache_dir)
    catalog = open_catalog(resolve_data_roots(data_root), cache_path)
    cache = CropCache(cache_path, size_limit_gb)
    total = len(selected_series(catalog, config))
    out = console()
    counts = {"filled": 0, "cached": 0, "outside": 0}
    with Progress(
        TextColumn("prepcache"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=out, disable=not out.is_terminal,
    ) as progress:
        task = progress.add_task("series", total=total)

        def on_result(result):
            counts["filled" if result.filled else "cached"] += 1
            counts["outside"] += result.n_outside
            progress.advance(task)

        prepcache(catalog, cache, config, progress=on_result)
    out.print(
        f"prepcache: {total} series (shard {config.shard}): {counts['filled']} filled, {counts['cached']} already cached"
        + (f", {counts['outside']} candidates outside their volume skipped" if counts["outside"] else "")
        + f"; cache {cache.directory}"
    )
    cache.close()


@cache_app.command("info", epilog="Example: ct cache info --json")
def cache_info(cache_dir: CacheDirOption = None, json_output: JsonOption = False) -> None:
    """Where the cache is, how many series it holds and how big it is."""
    cache = CropCache(resolve_cache_dir(cache_dir))
    stats = cache.stats()
    cache.close()
    if json_output:
        print_json(stats)
        return
    console().print(
        f"{stats['directory']}: {stats['series']} series, {stats['regions']} regions, "
        f"{stats['bytes'] / 2**20:,.1f} MiB of {stats['size_limit_bytes'] / 2**30:,.0f} GiB allowed"
    )


@cache_app.command("clear", epilog="Example: ct cache clear --yes")
def cache_clear(
    cache_dir: CacheDirOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete every cached crop region (the CT files are not touched)."""
    cache = CropCache(resolve_cache_dir(cache_dir))
    if not yes and not typer.confirm(f"Delete everything in {cache.directory}?"):
        raise typer.Exit(1)
    removed = cache.clear()
    cache.close()
    console().print(f"removed {removed} entries from {cache.directory}")


def register(app: typer.Typer) -> None:
    app.command(
        "prepcache",
        epilog="Examples: ct prepcache --data-root /data/luna16 --workers 2 | "
        "ct prepcache --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
    )(prepcache_command)
    app.add_typer(cache_app, name="cache")
