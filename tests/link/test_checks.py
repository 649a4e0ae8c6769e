"""The link's checks of agent health figures: their own limit, larger than other maps' (an agent sends a few
figures per camera), and names of 1–MAX_HEALTH_KEY_CHARS characters."""

from __future__ import annotations

import pytest

from facefleet.link.checks import MAX_HEALTH_ENTRIES, MAX_HEALTH_KEY_CHARS, MAX_MAP_ENTRIES, check_health
from facefleet.link.errors import LinkError


def test_health_takes_more_figures_than_other_maps_up_to_its_own_limit() -> None:
    assert MAX_HEALTH_ENTRIES > MAX_MAP_ENTRIES
    full = {f"camera.cam-{i:03d}.fps": float(i) for i in range(MAX_HEALTH_ENTRIES)}
    assert check_health(full) == full
    with pytest.raises(LinkError, match=f"health: at most {MAX_HEALTH_ENTRIES} figures"):
        check_health({**full, "one_more": 1.0})


@pytest.mark.parametrize(
    "health",
    [
        {"": 1.0},
        {"k" * (MAX_HEALTH_KEY_CHARS + 1): 1.0},
        {"fps": float("nan")},
        {"fps": float("inf")},
    ],
)
def test_bad_health_figures_are_refused_naming_the_limits(health: dict[str, float]) -> None:
    with pytest.raises(LinkError, match=f"1–{MAX_HEALTH_KEY_CHARS} character names, finite values"):
        check_health(health)
