"""The verified files of a data set parsed into tensors by torchvision's dataset classes.

torchvision.datasets.MNIST and CIFAR10 (always with download=False) read the files that
dropout_lab.training.data fetched and verified, laid out where those classes look, in a
staging folder. The CIFAR-10 archive holds pickles: it is extracted only after its digest
matches, and each batch is read first through an unpickler that admits the few numpy types
the archive uses, so one that would run code never reaches torchvision's unpickler.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from dropout_lab.settings.datasets import CIFAR10

class DataError(RuntimeError):
    """A dataset could not be obtained or verified; the message is one line."""




@dataclass
class Splits:
    """Images as uint8 (N, H, W) or (N, C, H, W), labels as int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"train_x": self.train_x, "train_y": self.train_y, "test_x": self.test_x, "test_y": self.test_y}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


TORCHVISION_REQUIREMENT = "torchvision>=0.26,<0.30"


def _torchvision_datasets():
    try:
        import torchvision.datasets as tv_datasets  # imported here: a load from the cache never needs it
    except ImportError as err:
        raise DataError(f"torchvision is not installed ({err}); it parses the data sets: "
                        f"pip install '{TORCHVISION_REQUIREMENT}'") from None
    return tv_datasets


@contextlib.contextmanager
def _staging(beside: Path):
    """A fresh folder for torchvision's layout, removed when done: in `beside` (the data set's folder, where the
    verified files can be hard-linked), or in the system's temporary folder where `beside` is read-only."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=".torchvision-", dir=beside))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="dropout-lab-torchvision-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _place(verified: Path, dest: Path) -> None:
    """Put the verified file at dest: a hard link (no copy of the bytes), or a copy where links are not allowed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(verified, dest)
    except OSError:
        shutil.copyfile(verified, dest)


def _build(class_name: str, root: Path, train: bool, what: str, dataset_class=None):
    """Construct torchvision.datasets.CLASS (or `dataset_class`, a subclass of it) from the staged files; any failure
    is one DataError line naming `what`."""
    dataset_class = dataset_class or getattr(_torchvision_datasets(), class_name)
    try:
        return dataset_class(root=str(root), train=train, download=False)
    except Exception as err:  # torchvision's own checks raise assorted types (RuntimeError, KeyError, asserts)
        detail = " ".join(str(err).split()) or type(err).__name__
        split = "training" if train else "test"
        raise DataError(f"torchvision.datasets.{class_name} could not read the {split} split of {what} "
                        f"({type(err).__name__}: {detail}); the files match their digests, so those digests name "
                        "files of another format: check dataset.checksums") from None


# Where torchvision.datasets.MNIST looks for the four IDX files, in the order of an idx spec's files.
TORCHVISION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _parse_idx(paths: Mapping[str, Path], pins: Mapping[str, str]) -> Splits:
    """Four verified IDX files, in the spec's order (training images and labels, test images and labels), read by
    torchvision.datasets.MNIST from root/MNIST/raw under the names it expects."""
    files = list(paths.values())
    if len(files) != len(TORCHVISION_MNIST_FILES):
        raise DataError(f"an idx data set has {len(TORCHVISION_MNIST_FILES)} files (training images, training "
                        f"labels, test images, test labels); this one has {[p.name for p in files]}")
    what = f"{files[0].parent} ({', '.join(p.name for p in files)})"
    with _staging(files[0].parent.parent) as root:
        for name, verified in zip(TORCHVISION_MNIST_FILES, files):
            _place(verified, root / "MNIST" / "raw" / name)
        train = _build("MNIST", root, True, what)
        test = _build("MNIST", root, False, what)
    return _counted(Splits(train_x=train.data, train_y=train.targets.to(torch.int64),
                           test_x=test.data, test_y=test.targets.to(torch.int64)), what)


def _counted(splits: Splits, what: str) -> Splits:
    """torchvision does not compare the number of images with the number of labels; the project does."""
    for split, images, labels in (("training", splits.train_x, splits.train_y), ("test", splits.test_x, splits.test_y)):
        if len(images) != len(labels):
            raise DataError(f"{what}: the {split} split has {len(images)} images but {len(labels)} labels")
    return splits


class _CifarUnpickler(pickle.Unpickler):
    """Admit only what the CIFAR-10 batches contain: builtins and numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"  # the archive's folder, where torchvision.datasets.CIFAR10 looks
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_MEMBERS = (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta")  # every file torchvision unpickles


def _extract_cifar(archive: Path, folder: Path) -> None:
    """Write the members torchvision reads from the verified archive into folder (by their names only, so no
    member can land elsewhere), and refuse any whose pickle refers to more than builtins and numpy arrays."""
    folder.mkdir(parents=True)
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{archive} is not a readable tar.gz archive ({err})") from None
    with tar:
        for member in CIFAR_MEMBERS:
            try:
                stream = tar.extractfile(f"{CIFAR_FOLDER}/{member}")
                blob = stream.read() if stream is not None else None  # a batch is about 30 MB
            except KeyError:
                blob = None
            except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                raise DataError(f"{archive} is not a readable tar.gz archive ({err})") from None
            if blob is None:
                raise DataError(f"{archive} has no file {CIFAR_FOLDER}/{member}; it is not a CIFAR-10 archive")
            try:
                (folder / member).write_bytes(blob)
            except OSError as err:
                raise DataError(f"could not write {member} of {archive} to {folder} ({err.strerror or err}); "
                                "free space there, or set data_dir to a writable folder") from None
    for member in CIFAR_MEMBERS:
        # torchvision unpickles with the full unpickler; each file is first read through the restricted one, with the
        # same encoding, so a pickle that would run code is refused before torchvision opens it.
        try:
            with open(folder / member, "rb") as fh:
                _CifarUnpickler(fh, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, ImportError) as err:
            raise DataError(f"{archive}: {member} is not a CIFAR-10 batch ({err})") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _parse_cifar10(paths: Mapping[str, Path], pins: Mapping[str, str]) -> Splits:
    """The verified archive, extracted to root/cifar-10-batches-py and read by torchvision.datasets.CIFAR10."""
    archive = paths[CIFAR_ARCHIVE]
    with _staging(archive.parent.parent) as root:
        _extract_cifar(archive, root / CIFAR_FOLDER)
        cifar_class = None  # torchvision's, with its MD5s of the official batches
        if pins[CIFAR_ARCHIVE] != CIFAR10.files[CIFAR_ARCHIVE]:
            # A re-packed copy verified against the user's digest: torchvision's MD5s are those of the official
            # batches, so its integrity check is given the MD5s of this archive's (verified) batches instead.
            md5 = {member: _md5(root / CIFAR_FOLDER / member) for member in CIFAR_MEMBERS}
            official = _torchvision_datasets().CIFAR10
            cifar_class = type("CIFAR10", (official,), {
                "train_list": [[name, md5[name]] for name in CIFAR_TRAIN_BATCHES],
                "test_list": [["test_batch", md5["test_batch"]]],
                "meta": {**official.meta, "md5": md5["batches.meta"]},
            })
        train = _build("CIFAR10", root, True, str(archive), cifar_class)
        test = _build("CIFAR10", root, False, str(archive), cifar_class)

    def images(dataset) -> torch.Tensor:  # torchvision holds (N, H, W, C); the project's layout is (N, C, H, W)
        pixels = np.asarray(dataset.data)
        if pixels.dtype != np.uint8:
            raise DataError(f"{archive}: its images are {pixels.dtype}, not the uint8 of CIFAR-10")
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))

    def labels(dataset) -> torch.Tensor:
        return torch.from_numpy(np.asarray(dataset.targets, dtype=np.int64))

    return _counted(Splits(train_x=images(train), train_y=labels(train), test_x=images(test), test_y=labels(test)),
                    str(archive))


# DatasetSpec.format -> its parser, called with the verified files and the digests they were verified against.
PARSERS = {"idx": _parse_idx, "cifar-pickle": _parse_cifar10}
