"""The datasets this project knows: their pinned files, mirrors and shapes (no torch: the workflow's DAG and
the analysis read this table without importing the training stack)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: Mapping[str, str]  # file name -> pinned SHA-256 (of the decompressed bytes if gzipped)
    official_mirrors: tuple[str, ...]
    gzipped: bool  # sources may hold NAME.gz (decompressed on arrival) as well as NAME
    mirror_env: str  # environment variable that names a user mirror
    classes: int  # label values 0..classes-1
    image: tuple[int, int, int]  # channels, height, width
    train_images: int  # in the official training split
    test_images: int
    # How its files are parsed (training.data.PARSERS, by torchvision's dataset classes once the files verify): idx
    # is four IDX files (train images, train labels, test images, test labels, in `files` order) read by
    # torchvision.datasets.MNIST; cifar-pickle the python batches of a CIFAR-10 archive, read by
    # torchvision.datasets.CIFAR10.
    format: str = "idx"
    # Pixels scaled to [0, 1] (a dropped pixel is background), or also standardised per channel (colour images).
    standardise: bool = False
    # SHA-256 of the parsed tensors (dropout_lab.training.data.content_sha256) of the official files, which a cache
    # must match; None where no pin is known (the cache is then rebuilt from the verified files on each load).
    content_sha256: str | None = None


MNIST = DatasetSpec(
    name="mnist",
    files={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    official_mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    gzipped=True,
    mirror_env="DROPOUT_LAB_MNIST_MIRROR",
    classes=10,
    image=(1, 28, 28),
    train_images=60000,
    test_images=10000,
    content_sha256="d3f54bc88d521ad86d8820c60639268121b5fc94c3b1bfaf13eebc59766d3c9c",
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    files={"cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"},
    official_mirrors=("https://www.cs.toronto.edu/~kriz/",),
    gzipped=False,
    mirror_env="DROPOUT_LAB_CIFAR10_MIRROR",
    classes=10,
    image=(3, 32, 32),
    train_images=50000,
    test_images=10000,
    format="cifar-pickle",
    standardise=True,
)

SPECS = {spec.name: spec for spec in (MNIST, CIFAR10)}


def cache_paths(data_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Where a data set's verified tensor cache and its manifest live (the workflow's rules name the same files)."""
    folder = Path(data_dir) / name
    return folder / f"{name}.pt", folder / f"{name}.manifest.json"
