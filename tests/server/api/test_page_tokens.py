"""Page tokens over gRPC on a real server: a token continues only the listing it was issued for (the same
filter) and only as issued; ListPeople checks its group as StartRollout checks a target group."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import pytest

from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, gallery_pb2, query_pb2
from tests.server.conftest import Pki, run, serving
from tests.server.fleet.test_query_service import reported, window
from tests.server.gallery.test_admin_service import unit_vector


def altered(token: str) -> str:
    """The token with the last character of its position (a row's or a person's id) changed: well formed,
    but not as issued."""
    text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    return forged(text[:-1] + ("b" if text[-1] == "a" else "a"))


def forged(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def refusal(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


def test_a_page_token_continues_only_its_own_filter_and_only_unaltered(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    Refusal = tuple[grpc.StatusCode, str]

    async def scenario() -> tuple[list[str], list[str], list[Refusal], Refusal, Refusal]:
        async with serving(tmp_path, pki, enroller) as harness:
            query, qmd = await reported(harness), harness.query_md
            admin, amd = harness.admin(), harness.admin_md
            for person_id in ("alice", "bob", "carol"):
                embedding = gallery_pb2.Embedding(model_id="sface@2021dec", dim=128, vector=unit_vector())
                await admin.EnrollPerson(
                    admin_pb2.EnrollPersonRequest(person_id=person_id, embeddings=[embedding]), metadata=amd
                )
            cam = window(cameras=["cam"])
            first = await query.ListEvents(query_pb2.ListEventsRequest(filter=cam, page_size=1), metadata=qmd)
            token = first.next_page_token
            same = query_pb2.ListEventsRequest(filter=cam, page_size=100, page_token=token)
            audit = await admin.ListAudit(
                admin_pb2.ListAuditRequest(page_size=1, action_prefix="people"), metadata=amd
            )
            people = await admin.ListPeople(admin_pb2.ListPeopleRequest(page_size=1), metadata=amd)

            def events(flt: query_pb2.EventFilter, page_token: str) -> object:
                request = query_pb2.ListEventsRequest(filter=flt, page_size=100, page_token=page_token)
                return query.ListEvents(request, metadata=qmd)

            return (
                [e.camera for e in (await query.ListEvents(same, metadata=qmd)).events],
                [
                    e.action
                    for e in (
                        await admin.ListAudit(
                            admin_pb2.ListAuditRequest(
                                action_prefix="people", page_token=audit.next_page_token
                            ),
                            metadata=amd,
                        )
                    ).entries
                ],
                [
                    await refusal(events(window(cameras=["porch"]), token)),
                    await refusal(events(window(), token)),
                    await refusal(events(cam, altered(token))),
                    await refusal(events(window(), forged(f"e|{first.events[0].time.seconds * 10**6}|zzzz"))),
                    await refusal(
                        admin.ListAudit(
                            admin_pb2.ListAuditRequest(
                                action_prefix="tokens", page_token=audit.next_page_token
                            ),
                            metadata=amd,
                        )
                    ),
                    await refusal(
                        admin.ListPeople(
                            admin_pb2.ListPeopleRequest(page_token=altered(people.next_page_token)),
                            metadata=amd,
                        )
                    ),
                ],
                await refusal(
                    admin.ListPeople(admin_pb2.ListPeopleRequest(group="staff\x00 x"), metadata=amd)
                ),
                await refusal(
                    admin.StartRollout(
                        admin_pb2.StartRolloutRequest(
                            model_id="sface@2021dec", target=admin_pb2.RolloutTarget(group="staff\x00 x")
                        ),
                        metadata=amd,
                    )
                ),
            )

    continued, audit_continued, refused, group, rollout_group = run(scenario)
    assert continued and set(continued) == {"cam"}
    assert audit_continued == ["people.enrol", "people.enrol"]
    assert len(refused) == 6
    for code, details in refused:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in details and "start again without page_token" in details, details
    # the group is checked as a rollout's target group is
    assert group[0] == rollout_group[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "group 'staff\\x00 x' is not valid" in group[1] and rollout_group[1].endswith(group[1])
