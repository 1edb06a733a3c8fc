"""``cifarfw data``: inspect, verify and download CIFAR-10 (registered by the built-in plugin)."""

from __future__ import annotations

import json

import click


@click.group("data")
def data_cmd() -> None:
    """Inspect, verify and download CIFAR-10."""


_data_dir_option = click.option(
    "--data-dir", metavar="DIR", help="Folder holding cifar-10-batches-py (else CIFARFW_DATA_DIR, then the cache)."
)


@data_cmd.command("verify")
@_data_dir_option
@click.option("--data-checksums", metavar="FILE", help="Also check against this md5sum-format file.")
def data_verify(data_dir: str | None, data_checksums: str | None) -> None:
    """Check every file against the official MD5 sums (and a checksum file of your own)."""
    from cifarfw_cifar10 import cifar10

    folder = cifar10.find_folder(data_dir, allow_download=False)
    accepted = cifar10.read_checksum_file(data_checksums) if data_checksums else {}
    official_ok = True
    for name, digest in cifar10.check_files(folder):
        if digest is None:
            click.echo(f"{name:14} MISSING")
            official_ok = False
            continue
        official = cifar10.OFFICIAL_MD5[name] == digest
        official_ok &= official
        note = "official" if official else "NOT the official sum"
        if accepted:
            note += (
                ", matches " + data_checksums
                if accepted.get(name) == digest
                else ", does NOT match " + str(data_checksums)
            )
        click.echo(f"{name:14} {digest}  {note}")
    how = cifar10.verify(folder, data_checksums, verify_data=not accepted) if (official_ok or accepted) else None
    if how is None:
        raise cifar10.DataError(
            f"{folder} is not the official CIFAR-10; to use it anyway pass --data-checksums FILE or --no-verify-data"
        )
    click.echo(f"{folder}: verified ({how})")


@data_cmd.command("info")
@_data_dir_option
@click.option("--data-checksums", metavar="FILE", help="Accept a local copy whose files match this md5sum file.")
@click.option("--no-verify-data", is_flag=True, help="Skip the checksum check (warns).")
@click.option("--dataset", default="cifar10", show_default=True, help="Dataset name.")
@click.option("--json", "as_json", is_flag=True)
def data_info(
    data_dir: str | None,
    data_checksums: str | None,
    no_verify_data: bool,
    dataset: str,
    as_json: bool,
) -> None:
    """Load a dataset and show its splits, classes and provenance."""
    import numpy as np

    from cifarfw.config import RunConfig

    cfg = RunConfig(
        dataset=dataset, data_dir=data_dir or "", data_checksums=data_checksums or "", verify_data=not no_verify_data
    )
    host = click.get_current_context().find_root().obj["host"]  # the CLI's, honouring --disable-plugin
    ds = host.dataset(dataset).loader(cfg)
    info = ds.describe()
    info["class_names"] = list(ds.class_names)
    info["train_per_class"] = np.bincount(ds.train.labels, minlength=ds.num_classes).tolist()
    info["test_per_class"] = np.bincount(ds.test.labels, minlength=ds.num_classes).tolist()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"{info['name']}: {info['train_images']:,} train / {info['test_images']:,} test images, {info['classes']} classes, {'x'.join(map(str, info['image_shape']))}"
    )
    click.echo(f"classes: {', '.join(ds.class_names)}")
    click.echo(f"per class: train {info['train_per_class']}, test {info['test_per_class']}")
    click.echo(f"source: {info.get('source')}  verified: {info.get('verified')}")


@data_cmd.command("download")
@click.option("--dir", "target", metavar="DIR", help="Where to put it (default: the cache, CIFARFW_CACHE_DIR).")
def data_download(target: str | None) -> None:
    """Download the official archive (MD5 checked) and extract it."""
    from cifarfw_cifar10 import cifar10

    existing = cifar10.locate(target or cifar10.cache_dir())
    if existing is not None:
        click.echo(f"already present: {existing}")
        return
    folder = cifar10.download(target)
    click.echo(f"downloaded to {folder}")
