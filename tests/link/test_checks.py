"""The link's checks of agent health figures: their own limit, larger than other maps' (an agent sends a few
figures per camera), and names of 1–MAX_HEALTH_KEY_CHARS characters; the id rules."""

from __future__ import annotations

import pytest

from facefleet.link.checks import (
    MAX_HEALTH_ENTRIES,
    MAX_HEALTH_KEY_CHARS,
    MAX_MAP_ENTRIES,
    check_health,
    check_id,
    check_model_id,
)
from facefleet.link.errors import LinkError
from facefleet.link.models import ModelFile
from facefleet.vision.errors import ModelStoreError
from facefleet.vision.models.manifest import check_part


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


@pytest.mark.parametrize("value", ["", "-ann", "ann lee", "ann\n", "ann\nbob", "a" * 129, "ann/2"])
def test_an_id_outside_the_rule_is_refused(value: str) -> None:
    with pytest.raises(LinkError, match="is not valid"):
        check_id("person id", value)
    assert check_id("person id", "Ann.Lee_1:door@site-2") == "Ann.Lee_1:door@site-2"


@pytest.mark.parametrize("value", ["sface", "sface@", "@2021dec", "sface@2021dec\n", "s face@2021dec"])
def test_a_model_id_outside_the_rule_is_refused(value: str) -> None:
    with pytest.raises(LinkError, match="is not valid"):
        check_model_id(value)
    assert check_model_id("sface@2021dec-int8") == "sface@2021dec-int8"


def test_a_model_file_name_or_digest_with_a_trailing_newline_is_refused() -> None:
    digest = "a" * 64
    assert ModelFile("model.xml", 10, digest).name == "model.xml"
    for name, sha256 in (("model.xml\n", digest), ("model.xml", digest + "\n")):
        with pytest.raises(LinkError):
            ModelFile(name, 10, sha256)
    with pytest.raises(ModelStoreError, match="is not allowed"):
        check_part("version", "2021dec\n")
