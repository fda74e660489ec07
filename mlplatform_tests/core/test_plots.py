"""Unit tests of evaluation plots (mlplatform.core.plots)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from matplotlib.image import imread

from mlplatform.core.plots import confusion_matrix_png, precision_recall_png, roc_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Y_TRUE = np.array([0, 0, 1, 0, 1, 0, 1, 1, 0, 0])
Y_SCORE = np.array([0.1, 0.2, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9, 0.05, 0.3])


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk."""
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _assert_png(data: bytes) -> None:
    assert isinstance(data, bytes)
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000
    width, height = _png_size(data)
    assert width > 150
    assert height > 150
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.01  # not a blank canvas


@pytest.mark.parametrize("matrix", [[[50, 3], [2, 10]], [[0, 0], [0, 0]], [[9000, 120], [15, 300]]])
def test_confusion_matrix_png(matrix: list[list[int]]) -> None:
    _assert_png(confusion_matrix_png(matrix))


def test_confusion_matrix_png_title_changes_the_image() -> None:
    matrix = [[50, 3], [2, 10]]
    assert confusion_matrix_png(matrix, title="A") != confusion_matrix_png(matrix, title="B")


def test_confusion_matrix_png_values_change_the_image() -> None:
    assert confusion_matrix_png([[50, 3], [2, 10]]) != confusion_matrix_png([[50, 3], [2, 11]])


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.99, 1.5])
@pytest.mark.parametrize("min_recall", [None, 0.8])
def test_precision_recall_png(threshold: float, min_recall: float | None) -> None:
    _assert_png(precision_recall_png(Y_TRUE, Y_SCORE, threshold, min_recall=min_recall))


def test_precision_recall_png_marks_the_operating_point() -> None:
    assert precision_recall_png(Y_TRUE, Y_SCORE, 0.3) != precision_recall_png(Y_TRUE, Y_SCORE, 0.85)


def test_roc_png() -> None:
    _assert_png(roc_png(Y_TRUE, Y_SCORE))


def test_roc_png_depends_on_the_scores() -> None:
    assert roc_png(Y_TRUE, Y_SCORE) != roc_png(Y_TRUE, Y_SCORE[::-1])
