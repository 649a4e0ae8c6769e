"""Errors of the vision pipeline and the model store, each with its CLI exit code."""

from __future__ import annotations

from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_UNAVAILABLE, FaceFleetError


class ImageError(FaceFleetError):
    """An image cannot be read or has an unusable format."""

    exit_code = EXIT_DATA


class DeviceError(FaceFleetError):
    """The requested OpenVINO device is not available."""

    exit_code = EXIT_UNAVAILABLE


class ModelStoreError(FaceFleetError):
    """The model store is missing a model or cannot be written."""

    exit_code = EXIT_IO


class ModelIntegrityError(ModelStoreError):
    """A stored model file does not match the sha256 in its manifest."""


class ModelSpecError(FaceFleetError):
    """A model's inputs or outputs do not fit the task it is imported for."""

    exit_code = EXIT_DATA


class ConversionLimitError(FaceFleetError):
    """Converting a model needed more memory or time than its limits allow, or the converting child process
    died."""

    exit_code = EXIT_DATA


class StorageFullError(ModelStoreError):
    """A model could not be written: the disk holding the model store is full."""


class QuantizationError(FaceFleetError):
    """A model cannot be quantized: its task is not allowed, no faces to calibrate on, or the accuracy guard
    refused the result (the error then carries the guard's figures)."""

    exit_code = EXIT_DATA

    def __init__(self, message: str, figures: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.figures = figures


class QuantizerMissingError(QuantizationError):
    """NNCF, the optional quantization extra, is not installed."""

    exit_code = EXIT_UNAVAILABLE
