"""CIFAR-10 in the official python layout: find, verify, download and read it safely.

Where the files come from, in order: ``--data-dir`` / ``data_dir``, ``CIFARFW_DATA_DIR``,
the cache folder (``CIFARFW_CACHE_DIR``, else ``~/.cache/cifarfw``), and finally a
download of the official archive into the cache. Files are checked against the
official MD5 sums; a copy with other sums is used only when the user accepts it with a
checksum file of its own (``--data-checksums``) or ``--no-verify-data``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cifarfw.data import Dataset, Split
from cifarfw.errors import DataError, UsageError

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SUPPLY_HINT = (
    f"download {URL} elsewhere and extract it into {{cache}} (or anywhere, then pass --data-dir DIR "
    "or set CIFARFW_DATA_DIR)"
)


def cache_dir() -> Path:
    return Path(os.environ.get("CIFARFW_CACHE_DIR") or Path.home() / ".cache" / "cifarfw")


# --- safe reading -----------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR format holds: dicts, lists, strings, numbers and numpy
    arrays. Any other global (``os.system``, say) is refused, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            import importlib

            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> dict[str, Any]:
    """Read one batch file; a DataError names the file and what to do."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "refusing" in str(err):
            raise DataError(f"{path} is not a CIFAR-10 batch ({err}); replace it with an official copy") from None
        raise DataError(f"{path} is truncated or corrupt ({err}); download the data again") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as err:
        raise DataError(f"{path} is truncated or corrupt ({type(err).__name__}); download the data again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a {type(obj).__name__}, not a dict)")
    return obj


def _split(files: tuple[str, ...], folder: Path) -> Split:
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = read_batch(path)
        data, batch_labels = batch.get("data"), batch.get("labels")
        batch_labels = np.asarray(batch_labels if isinstance(batch_labels, list | np.ndarray) else [])
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
            or not len(data)
            or batch_labels.dtype.kind not in "iu"
            or batch_labels.shape != (len(data),)
        ):
            raise DataError(f"{path} does not hold CIFAR-10 images (data N x 3072 uint8 and N integer labels, N > 0)")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels.astype(np.int64))
    all_labels = np.concatenate(labels)
    if all_labels.min() < 0 or all_labels.max() > 9:
        raise DataError(f"labels outside 0-9 in {folder}")
    return Split(np.ascontiguousarray(np.concatenate(images)), all_labels)


# --- finding and verifying --------------------------------------------------------------


def locate(data_dir: str | os.PathLike | None) -> Path | None:
    """The ``cifar-10-batches-py`` folder under ``data_dir`` (or ``data_dir`` itself)."""
    base = Path(data_dir).expanduser()
    for candidate in (base / FOLDER, base):
        if (candidate / "batches.meta").exists() or (candidate / "data_batch_1").exists():
            return candidate
    return None


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checksum_file(path: str | os.PathLike) -> dict[str, str]:
    """An md5sum-format file (``<md5>  <path>`` a line) -> {file name: md5}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read checksum file {path}: {err}") from None
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 32:
            raise DataError(f"{path}:{number} is not an md5sum line ('<md5>  <file>')")
        sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


def check_files(folder: Path) -> list[tuple[str, str | None]]:
    """[(file name, md5 or None when missing)] for every file of the layout."""
    return [
        (name, md5(folder / name) if (folder / name).is_file() else None)
        for name in (*TRAIN_FILES, *TEST_FILES, "batches.meta")
    ]


def verify(
    folder: Path, checksums: str | None, verify_data: bool, sums: list[tuple[str, str | None]] | None = None
) -> str:
    """Check every file (``sums``: their md5s, when already computed); return how: 'official',
    'checksums:<file>' or 'unverified'."""
    sums = sums if sums is not None else check_files(folder)
    missing = [name for name, digest in sums if digest is None]
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(missing)}; point --data-dir at a complete cifar-10-batches-py copy "
            "or run `cifarfw data download`"
        )
    if all(OFFICIAL_MD5[name] == digest for name, digest in sums):
        return "official"
    if checksums:
        accepted = read_checksum_file(checksums)
        for name, digest in sums:
            if name not in accepted:
                raise DataError(f"checksum file {checksums} has no line for {name}")
            if accepted[name] != digest:
                raise DataError(
                    f"{folder / name} does not match its sum in {checksums}: the file is corrupt, truncated "
                    "or changed; restore it from its source"
                )
        return f"checksums:{checksums}"
    if not verify_data:
        return "unverified"
    wrong = [name for name, digest in sums if OFFICIAL_MD5[name] != digest]
    raise DataError(
        f"{folder / wrong[0]} does not match the official CIFAR-10 checksum (nor do {len(wrong) - 1} more); "
        "if you trust this copy, pass --data-checksums FILE (md5sum format) or --no-verify-data"
    )


# --- downloading ------------------------------------------------------------------------


def download(target: Path | None = None) -> Path:
    """Download and extract the official archive (progress bar, MD5 checked) into ``target``."""
    import pooch  # a well-kept downloader: hashes, progress bars, retries, atomic writes
    import requests

    target = Path(target or cache_dir())
    try:
        target.mkdir(parents=True, exist_ok=True)
        pooch.get_logger().setLevel("WARNING")  # its "Downloading ..." line: the progress bar says it
        pooch.retrieve(
            URL,
            known_hash=f"md5:{ARCHIVE_MD5}",
            fname=ARCHIVE,
            path=target,
            progressbar=sys.stderr.isatty(),  # no bar in logs
            processor=pooch.Untar(extract_dir="."),
        )
    except requests.RequestException as err:  # connection and HTTP errors (before OSError: a subclass)
        cut = isinstance(err, requests.exceptions.ChunkedEncodingError)  # the server stopped mid-transfer
        why = "the CIFAR-10 download was cut short" if cut else "could not download CIFAR-10"
        hint = SUPPLY_HINT.format(cache=target)
        raise DataError(f"{why} ({type(err).__name__}); {'try again, or ' if cut else 'offline? '}{hint}") from None
    except OSError as err:
        raise DataError(f"cannot write the download into {target}: {err.strerror or err}") from None
    except ValueError:  # pooch's hash mismatch (it deleted the file)
        raise DataError(f"the downloaded archive failed its MD5 check (expected {ARCHIVE_MD5}); try again") from None
    folder = locate(target)
    if folder is None:
        raise DataError(f"the archive extracted into {target} holds no {FOLDER}; remove {target} and try again")
    return folder


def check(options: dict[str, Any], data_dir: str, checksums: str) -> None:
    """What a run checks before any work (``--dry-run`` too): no options, a --data-dir that
    exists, a readable checksum file. Finding and verifying the files waits for the run."""
    if options:
        raise UsageError(f"the cifar10 dataset takes no dataset_options (got {', '.join(sorted(options))})")
    if data_dir and not Path(data_dir).expanduser().exists():
        raise DataError(f"data folder {data_dir} does not exist; check --data-dir / CIFARFW_DATA_DIR")
    if checksums:
        read_checksum_file(checksums)


def find_folder(data_dir: str | None, allow_download: bool = True) -> Path:
    """The folder to read, downloading into the cache when nothing local exists."""
    explicit = data_dir or os.environ.get("CIFARFW_DATA_DIR")
    if explicit:
        if not Path(explicit).expanduser().exists():
            raise DataError(f"data folder {explicit} does not exist; check --data-dir / CIFARFW_DATA_DIR")
        folder = locate(explicit)
        if folder is None:
            raise DataError(
                f"no CIFAR-10 in {explicit}: expected {Path(explicit) / FOLDER}/data_batch_1 ...; "
                "run `cifarfw data download` or point --data-dir at the folder holding cifar-10-batches-py"
            )
        return folder
    folder = locate(cache_dir())
    if folder is not None:
        return folder
    if not allow_download:
        raise DataError(f"CIFAR-10 is not in {cache_dir()}; run `cifarfw data download` or pass --data-dir DIR")
    return download(cache_dir())


def load(data_dir: str | None, checksums: str | None = None, verify_data: bool = True) -> Dataset:
    """Locate, verify and read CIFAR-10."""
    folder = find_folder(data_dir)
    sums = check_files(folder)
    how = verify(folder, checksums, verify_data, sums)
    # What the files are, whatever path they were read from: runs grouped by it compare like data.
    digest = hashlib.sha1(" ".join(f"{name}:{md5}" for name, md5 in sums).encode()).hexdigest()[:16]
    names = read_batch(folder / "batches.meta").get("label_names", CLASS_NAMES)
    if not isinstance(names, list | tuple) or len(names) != 10 or not all(isinstance(n, str) for n in names):
        raise DataError(f"{folder / 'batches.meta'}: label_names is not a list of 10 class names")
    return Dataset(
        "cifar10",
        _split(TRAIN_FILES, folder),
        _split(TEST_FILES, folder),
        tuple(names),
        {"source": str(folder), "verified": how, "official": how == "official", "digest": digest},
    )
