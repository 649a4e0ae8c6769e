"""Page tokens over HTTPS: the HTTP API shares the gRPC API's check, so a next_page_token continues only the
listing it was issued for (the same filter), and /api/people checks its group as rollouts do."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from facefleet.link.checks import utc_now
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, gallery_pb2
from tests.server.conftest import Pki, run, serving
from tests.server.fleet.test_query_service import T0, reported
from tests.server.gallery.test_admin_service import unit_vector
from tests.server.http.clients import client, problem
from tests.server.http.test_unknown import report, sighting

WINDOW = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=3)).isoformat()}


def test_a_next_page_token_with_another_filter_is_a_400_saying_to_start_again(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            await reported(harness)
            now = utc_now()
            await report(harness, [sighting(i, 0, now - timedelta(minutes=i)) for i in range(3)])
            for person_id in ("ann", "anna", "bo"):
                embedding = gallery_pb2.Embedding(model_id="sface@2021dec", dim=128, vector=unit_vector())
                await harness.admin().EnrollPerson(
                    admin_pb2.EnrollPersonRequest(person_id=person_id, embeddings=[embedding]),
                    metadata=harness.admin_md,
                )

            async def token(path: str, params: dict[str, Any]) -> str:
                page = (await http.get(path, params={**params, "page_size": 1})).json()
                assert page["next_page_token"], (path, page)
                return str(page["next_page_token"])

            listings = [
                ("/api/events", {**WINDOW, "camera": "cam"}, {**WINDOW, "camera": "porch"}),
                ("/api/audit", {"action_prefix": "people"}, {"action_prefix": "tokens"}),
                ("/api/people", {"q": "ann"}, {"q": "bo"}),
                ("/api/snapshots", {"camera": "entrance"}, {"status": "new"}),
            ]
            refused, continued = [], []
            for path, issued_for, other in listings:
                page_token = await token(path, issued_for)
                same = await http.get(path, params={**issued_for, "page_token": page_token})
                continued.append(same.json())
                answer = await http.get(path, params={**other, "page_token": page_token})
                refused.append(problem(answer, 400, "INVALID_ARGUMENT")["detail"])
            group = problem(
                await http.get("/api/people", params={"group": "staff\x00 x"}), 400, "INVALID_ARGUMENT"
            )
            return continued, group, refused

    continued, group, refused = run(scenario)
    keys = ("events", "entries", "people", "snapshots")
    assert [len(page[key]) for page, key in zip(continued, keys, strict=True)] == [4, 2, 1, 2]
    for detail in refused:
        assert "page_token" in detail and "start again without page_token" in detail, detail
    assert "group 'staff\\x00 x' is not valid" in group["detail"]
