"""The datasets the pipeline knows by name: file names, mirrors, class names, checksums,
and the shape facts (image size, training images per class) the config check needs before
any file is downloaded.

Checksums: where the SHA-256 of the decompressed IDX content is known it is what a file
must match, because mirrors re-compress the files (Debian's Fashion-MNIST .gz files differ
from Zalando's byte for byte, yet hold the same content). Where only digests of the
published .gz files are known, the .gz bytes must match them. Every value below is copied
from the public source named beside it; none is computed from an unverified copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from mnist_pipeline.errors import IdxFormatError

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class FileChecksum:
    """Known digests of one file (lower-case hex); None where no public value is known."""

    content_sha256: str | None = None
    gz_sha256: str | None = None
    gz_md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: mirror base URLs (tried in order), per-stem checksums, class names,
    image size (rows, cols) and training images per class (the checksums pin the content,
    so these are facts, not guesses)."""

    name: str
    mirrors: tuple[str, ...]
    checksums: Mapping[str, FileChecksum]
    classes: tuple[str, ...]
    train_class_counts: tuple[int, ...] = ()
    image_shape: tuple[int, int] = (28, 28)
    #: Whether a left-right mirror image shows the same class: true of clothes, not of digits
    #: or characters (a mirrored 2 is no digit), which augment_flip would teach the wrong thing.
    mirror_keeps_class: bool = False


def _checksums(by_stem: dict[str, FileChecksum]) -> Mapping[str, FileChecksum]:
    assert tuple(by_stem) == IDX_STEMS, by_stem.keys()
    return MappingProxyType(by_stem)


# MNIST. Mirrors: torchvision.datasets.MNIST.mirrors (ossci-datasets, yann.lecun.com) and
# tensorflow-datasets url_checksums/mnist.txt (cvdf-datasets). gz SHA-256: that TFDS file;
# gz MD5: torchvision MNIST.resources. No public SHA-256 of the decompressed files was
# found, so MNIST is verified by its .gz bytes (a re-compressed copy is refused).
MNIST = DatasetSpec(
    name="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    checksums=_checksums(
        {
            "train-images-idx3-ubyte": FileChecksum(
                gz_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
            ),
            "train-labels-idx1-ubyte": FileChecksum(
                gz_sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
            ),
            "t10k-images-idx3-ubyte": FileChecksum(
                gz_sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                gz_md5="9fb629c4189551a2d022fa330f9573f3",
            ),
            "t10k-labels-idx1-ubyte": FileChecksum(
                gz_sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
            ),
        }
    ),
    classes=tuple(str(digit) for digit in range(10)),
    # Lightning-AI's tests_pytorch/helpers/test_datasets.py asserts these per-digit counts.
    train_class_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
)

# Fashion-MNIST. Mirrors: Zalando's own (zalandoresearch/fashion-mnist README, torchvision
# FashionMNIST.mirrors), Keras (keras/src/datasets/fashion_mnist.py) and the data/fashion
# folder of Zalando's repository. Content SHA-256: the decompressed files of Debian's
# dataset-fashion-mnist package; for both label files it is also the content of the .gz
# files in Zalando's repository, whose MD5 and SHA-256 match the published ones below.
# gz SHA-256: tensorflow-datasets url_checksums/fashion_mnist.txt, equal to Keras's
# FILE_HASHES; gz MD5: the Zalando README table. Class names: the same README.
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    checksums=_checksums(
        {
            "train-images-idx3-ubyte": FileChecksum(
                content_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                gz_sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ),
            "train-labels-idx1-ubyte": FileChecksum(
                content_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                gz_sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                gz_md5="25c81989df183df01b3e8a0aad5dffbe",
            ),
            "t10k-images-idx3-ubyte": FileChecksum(
                content_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                gz_sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                gz_md5="bef4ecab320f06d8554ea6380940ec79",
            ),
            "t10k-labels-idx1-ubyte": FileChecksum(
                content_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                gz_sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                gz_md5="bb300cfdad3c16e7a12a480ee83cd310",
            ),
        }
    ),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mirror_keeps_class=True,
    # The Zalando README: 6,000 training images per class (also counted in Debian's files).
    train_class_counts=(6000,) * 10,
)

# Kuzushiji-MNIST. Mirror: torchvision KMNIST.mirrors and TFDS url_checksums/kmnist.txt
# (http), torchvision-ruby (https). gz SHA-256: that TFDS file (also torchvision-ruby's
# kmnist.rb); gz MD5: torchvision KMNIST.resources. Class names (romanised hiragana):
# torchvision KMNIST.classes, from rois-codh/kmnist's class map.
KMNIST = DatasetSpec(
    name="kmnist",
    mirrors=(
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    checksums=_checksums(
        {
            "train-images-idx3-ubyte": FileChecksum(
                gz_sha256="51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                gz_md5="bdb82020997e1d708af4cf47b453dcf7",
            ),
            "train-labels-idx1-ubyte": FileChecksum(
                gz_sha256="e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                gz_md5="e144d726b3acfaa3e44228e80efcd344",
            ),
            "t10k-images-idx3-ubyte": FileChecksum(
                gz_sha256="edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                gz_md5="5c965bf0a639b31b8f53240b1b52f4d7",
            ),
            "t10k-labels-idx1-ubyte": FileChecksum(
                gz_sha256="20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                gz_md5="7320c461ea6c1c855c0b718fb2a4b134",
            ),
        }
    ),
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    # rois-codh/kmnist README: balanced, 6,000 training images per class.
    train_class_counts=(6000,) * 10,
)

KNOWN_DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in (MNIST, FASHION_MNIST, KMNIST)})


def get_dataset(name: str) -> DatasetSpec | None:
    """The known dataset called `name`, or None for a custom one."""
    return KNOWN_DATASETS.get(name)


def class_names(dataset_name: str, n_classes: int) -> list[str]:
    """Display names of classes 0..n_classes-1: the dataset's own, else the numbers."""
    spec = get_dataset(dataset_name)
    if spec is not None and len(spec.classes) == n_classes:
        return list(spec.classes)
    return [str(index) for index in range(n_classes)]


@dataclass(frozen=True)
class ClassSet:
    """A dataset's classes: display names by class index, and the IDX label each index stands for."""

    names: tuple[str, ...]
    labels: tuple[int, ...]

    def indices(self, labels: np.ndarray, source: str) -> np.ndarray:
        """Class index int64 (n,) of each IDX label; IdxFormatError naming `source` for a label no class has."""
        known = np.asarray(self.labels, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        index = np.minimum(np.searchsorted(known, labels), len(known) - 1)
        stray = known[index] != labels
        if stray.any():
            at = int(np.flatnonzero(stray)[0])
            raise IdxFormatError(
                f"{source}: label {int(labels[at])} at index {at} is not one of the {len(known)} classes "
                f"({int(stray.sum())} such labels); class_names lists {len(known)} names, for labels 0 to {len(known) - 1}"
            )
        return index


def dataset_classes(dataset_name: str, declared: list[str] | None, *label_arrays: np.ndarray) -> ClassSet:
    """The classes of a dataset. Known datasets and custom ones that declare `class_names` have
    one class per name (label i is names[i]), whether or not their data has every class; any
    other custom dataset has one class per label value its data uses, named by that value, so
    labels {0, 5} make two classes, not six with four empty."""
    spec = get_dataset(dataset_name)
    names = spec.classes if spec is not None else declared
    if names is not None:
        return ClassSet(tuple(str(name) for name in names), tuple(range(len(names))))
    values = np.unique(np.concatenate([np.asarray(labels, dtype=np.int64).ravel() for labels in label_arrays]))
    return ClassSet(tuple(str(int(value)) for value in values), tuple(int(value) for value in values))


def absent_classes(info: Mapping[str, Any]) -> list[str]:
    """Names of the classes of a dataset.json that have no training or no test images."""
    counts = zip(info["classes"], info.get("train_class_counts") or [], info.get("test_class_counts") or [], strict=False)
    return [name for name, n_train, n_test in counts if n_train == 0 or n_test == 0]
