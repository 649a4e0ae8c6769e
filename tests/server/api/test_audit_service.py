"""The admin audit log over AdminService: changes and refusals are recorded with the token's name, and
ListAudit answers admin tokens only, a page at a time."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from facefleet.link.checks import utc_now
from facefleet.server.api.security import new_token
from facefleet.server.gallery.embedder import Enroller
from facefleet.v1 import admin_pb2, gallery_pb2
from tests.server.conftest import Pki, run, serving
from tests.server.gallery.test_admin_service import unit_vector


def enrolment(person_id: str) -> admin_pb2.EnrollPersonRequest:
    embedding = gallery_pb2.Embedding(model_id="sface@2021dec", dim=128, vector=unit_vector())
    return admin_pb2.EnrollPersonRequest(person_id=person_id, embeddings=[embedding])


def test_changes_and_refusals_are_listed_with_the_operator_and_outcome(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> tuple[list[admin_pb2.ListAuditResponse], grpc.StatusCode, str]:
        async with serving(tmp_path, pki, enroller) as harness:
            text, record = new_token("ops", "admin", utc_now())
            harness.server.state.add_token(record)
            ops = (("authorization", f"Bearer {text}"),)
            admin = harness.admin()
            await admin.EnrollPerson(enrolment("alice"), metadata=ops)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.EnrollPerson(enrolment("bad id!"), metadata=ops)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # answered as without the log
            await admin.DeletePerson(admin_pb2.DeletePersonRequest(person_id="alice"), metadata=ops)
            await admin.ListPeople(admin_pb2.ListPeopleRequest(), metadata=ops)  # a read: not recorded
            pages = [
                await admin.ListAudit(admin_pb2.ListAuditRequest(page_size=2), metadata=harness.admin_md)
            ]
            while pages[-1].next_page_token:
                request = admin_pb2.ListAuditRequest(page_size=2, page_token=pages[-1].next_page_token)
                pages.append(await admin.ListAudit(request, metadata=harness.admin_md))
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await admin.ListAudit(admin_pb2.ListAuditRequest(), metadata=harness.query_md)
            return pages, denied.value.code(), denied.value.details() or ""

    pages, denied, details = run(scenario)
    entries = [e for page in pages for e in page.entries]
    assert [(e.who, e.action, e.target, e.outcome) for e in entries] == [
        ("ops", "people.delete", "alice", "ok"),
        ("ops", "people.enrol", "bad id!", "INVALID_ARGUMENT"),
        ("ops", "people.enrol", "alice", "ok"),
    ]
    assert "person_id" in entries[1].detail
    assert [len(page.entries) for page in pages] == [2, 1]
    assert (denied, "has role 'query'" in details) == (grpc.StatusCode.PERMISSION_DENIED, True)


def test_list_audit_filters_by_who_and_action_prefix(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> tuple[list[str], list[str], grpc.StatusCode]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin = harness.admin()
            await admin.EnrollPerson(enrolment("bob"), metadata=harness.admin_md)
            with pytest.raises(grpc.aio.AioRpcError):
                await admin.RetireModel(
                    admin_pb2.RetireModelRequest(model_id="nope@v1"), metadata=harness.admin_md
                )
            people = await admin.ListAudit(
                admin_pb2.ListAuditRequest(action_prefix="people", who="admin"), metadata=harness.admin_md
            )
            models = await admin.ListAudit(
                admin_pb2.ListAuditRequest(action_prefix="models."), metadata=harness.admin_md
            )
            with pytest.raises(grpc.aio.AioRpcError) as forged:
                await admin.ListAudit(admin_pb2.ListAuditRequest(page_token="p1"), metadata=harness.admin_md)
            return (
                [e.target for e in people.entries],
                [f"{e.target} {e.outcome}" for e in models.entries],
                forged.value.code(),
            )

    people, models, forged = run(scenario)
    assert (people, models, forged) == (["bob"], ["nope@v1 NOT_FOUND"], grpc.StatusCode.INVALID_ARGUMENT)
