"""Datasets: synthetic generation, balanced subsets, CIFAR-10 reading, verification, download."""

from __future__ import annotations

import hashlib
import pickle
import socket

import numpy as np
import pytest

from cifarfw.data import Split, balanced_indices, synthetic
from cifarfw.errors import DataError
from cifarfw_cifar10 import cifar10
from conftest import shared_data_dir


def test_synthetic_is_deterministic_balanced_and_seed_dependent():
    a, b, c = synthetic.generate(300, 0), synthetic.generate(300, 0), synthetic.generate(300, 1)
    assert a.images.shape == (300, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert np.bincount(a.labels).tolist() == [30] * 10
    assert a.images.std() > 20  # not blank


def test_synthetic_classes_are_separable_by_their_mean_image():
    train, test = synthetic.generate(1000, 0), synthetic.generate(500, 1)
    centroids = np.stack([train.images[train.labels == k].reshape(-1, 3072).mean(0) for k in range(10)])
    flat = test.images.reshape(len(test), -1).astype(np.float64)
    # colour alone identifies most classes: nearest class-mean colour beats chance by far
    colour = flat.reshape(len(test), 1024, 3).mean(1)
    centre_colour = centroids.reshape(10, 1024, 3).mean(1)
    guess = np.argmin(((colour[:, None, :] - centre_colour[None]) ** 2).sum(-1), axis=1)
    assert (guess == test.labels).mean() > 0.5


def test_balanced_subset_keeps_order_and_balance():
    labels = np.array([0, 1, 1, 2, 0, 2, 1, 0, 2, 2])
    index = balanced_indices(labels, 6)
    assert index.tolist() == [0, 1, 2, 3, 4, 5]
    split = Split(np.zeros((10, 2, 2, 3), np.uint8), labels).subset(4)
    assert sorted(np.bincount(split.labels).tolist()) == [1, 1, 2]


# --- a small CIFAR-10 folder in the official layout ---------------------------------------


def write_cifar(folder, per_file=20, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in (*cifar10.TRAIN_FILES, *cifar10.TEST_FILES):
        batch = {
            "batch_label": name,
            "labels": (np.arange(per_file) % 10).tolist(),
            "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            "filenames": [f"{i}.png" for i in range(per_file)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": list(cifar10.CLASS_NAMES), "num_cases_per_batch": per_file, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def md5sum_file(folder, path):
    lines = [
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  cifar-10-batches-py/{p.name}" for p in sorted(folder.iterdir())
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def local_copy(tmp_path):
    folder = write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    return tmp_path / "data", md5sum_file(folder, tmp_path / "sums.md5")


def test_unofficial_copy_is_refused_without_acceptance(local_copy):
    data_dir, _ = local_copy
    with pytest.raises(DataError, match=r"does not match the official CIFAR-10 checksum.*--data-checksums"):
        cifar10.load(str(data_dir))


def test_unofficial_copy_loads_with_checksum_file_or_no_verify(local_copy):
    data_dir, sums = local_copy
    ds = cifar10.load(str(data_dir), str(sums))
    assert (len(ds.train), len(ds.test), ds.num_classes) == (100, 20, 10)
    assert ds.train.images.shape == (100, 32, 32, 3)
    assert ds.info["verified"].startswith("checksums:") and ds.info["official"] is False
    assert cifar10.load(str(data_dir), None, verify_data=False).info["verified"] == "unverified"


def test_layout_is_decoded_as_red_green_blue_planes(tmp_path):
    folder = write_cifar(tmp_path / "d" / "cifar-10-batches-py", per_file=10)
    raw = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    ds = cifar10.load(str(tmp_path / "d"), None, verify_data=False)
    image = ds.train.images[0]
    assert image[0, 0, 0] == raw[0] and image[0, 0, 1] == raw[1024] and image[0, 0, 2] == raw[2048]
    assert image[0, 1, 0] == raw[1] and image[1, 0, 0] == raw[32]


def test_changed_file_fails_its_checksum_and_is_named(local_copy):
    data_dir, sums = local_copy
    path = data_dir / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3 does not match its sum in .*sums.md5"):
        cifar10.load(str(data_dir), str(sums))


def test_truncated_file_names_the_file(local_copy):
    data_dir, _ = local_copy
    path = data_dir / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"data_batch_2 is truncated or corrupt.*download the data again"):
        cifar10.load(str(data_dir), None, verify_data=False)


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickle_that_runs_code_is_refused(local_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir, _ = local_copy
    (data_dir / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    with pytest.raises(
        DataError, match=r"data_batch_1 is not a CIFAR-10 batch \(refusing to load (posix|os)\.system\)"
    ):
        cifar10.load(str(data_dir), None, verify_data=False)
    assert not (tmp_path / "PWNED").exists()


def test_missing_folder_and_missing_files(tmp_path, local_copy):
    with pytest.raises(DataError, match="does not exist"):
        cifar10.load(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no CIFAR-10 in .*empty.*cifarfw data download"):
        cifar10.load(str(tmp_path / "empty"))
    data_dir, _ = local_copy
    (data_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="lacks test_batch"):
        cifar10.load(str(data_dir))


def test_bad_checksum_file(local_copy, tmp_path):
    data_dir, _ = local_copy
    bad = tmp_path / "bad.md5"
    bad.write_text("not a checksum line\n")
    with pytest.raises(DataError, match=r"bad\.md5:1 is not an md5sum line"):
        cifar10.load(str(data_dir), str(bad))


def test_offline_download_says_how_to_supply_a_copy(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("CIFARFW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFARFW_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        cifar10.load(None)
    message = str(info.value)
    assert "could not download CIFAR-10" in message and "offline?" in message
    assert cifar10.URL in message and "--data-dir" in message and "\n" not in message
    assert not list((tmp_path / "cache").glob("*.tar.gz"))  # nothing half-downloaded left


def test_existing_cache_is_used_without_network(tmp_path, monkeypatch):
    write_cifar(tmp_path / "cache" / "cifar-10-batches-py")
    monkeypatch.setenv("CIFARFW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFARFW_DATA_DIR", raising=False)
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("network used"))
    assert len(cifar10.load(None, None, verify_data=False).train) == 100


@pytest.mark.data
def test_shared_copy_verify_and_info(cli):
    data_dir = shared_data_dir()
    if data_dir is None:
        pytest.skip("../shared/data is not here")
    code, out, err = cli("data", "verify", "--data-dir", str(data_dir))
    assert code == 3
    assert out.count("NOT the official sum") == 7
    assert "--data-checksums" in err
    sums = str(data_dir / "cifar-10-batches-py.md5")
    code, out, err = cli("data", "verify", "--data-dir", str(data_dir), "--data-checksums", sums)
    assert code == 0 and "verified (checksums:" in out
    code, out, err = cli("data", "info", "--data-dir", str(data_dir), "--data-checksums", sums)
    assert code == 0, err
    assert "50,000 train / 10,000 test images, 10 classes" in out
    assert "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck" in out
    assert "[5000, 5000" in out and "[1000, 1000" in out
