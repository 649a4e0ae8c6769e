"""Embedding vectors checked and normalised: finite, non-zero, of unit L2 norm (pure numpy)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from facefleet.core.errors import EXIT_DATA, FaceFleetError

FloatArray = npt.NDArray[np.float32]


class MatchError(FaceFleetError, ValueError):
    """A query, gallery or policy value is unusable (wrong shape, NaN, unknown model, ...)."""

    exit_code = EXIT_DATA


def unit_vector(vector: npt.ArrayLike, what: str = "embedding") -> FloatArray:
    """(D,) finite, non-zero numbers → (D,) float32 of unit L2 norm; a MatchError naming `what` otherwise.

    A float32 vector already of unit norm (within 1e-6) is returned unchanged (copied), so normalising twice
    gives the same bits as normalising once.
    """
    try:
        given = np.asarray(vector)
        array = given.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise MatchError(f"{what}: not a numeric vector ({exc})") from None
    if array.ndim != 1 or array.size == 0:
        raise MatchError(f"{what}: expected a non-empty 1-D vector, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise MatchError(f"{what}: contains NaN or infinity; the embedding model failed on this face")
    if given.dtype == np.float32 and abs(float(np.linalg.norm(array)) - 1.0) <= 1e-6:
        same: FloatArray = given.copy()
        return same
    peak = float(np.max(np.abs(array)))
    if peak == 0.0:
        raise MatchError(f"{what}: is all zeros, so it has no direction to compare")
    scaled = array / peak  # dividing by the peak first keeps the norm free of overflow and underflow
    unit: FloatArray = (scaled / np.linalg.norm(scaled)).astype(np.float32)
    return unit
