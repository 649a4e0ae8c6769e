"""AdminService end to end: tokens and roles, enrolment from real photos and from embeddings, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest

from facefleet.server.gallery.embedder import Enroller, EnrolmentSettings
from facefleet.v1 import admin_pb2, gallery_pb2
from facefleet.vision.models.store import ModelStore
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.runtime import Runtime
from tests.server.conftest import Pki, encode, run, serving
from tests.tmpfs import fill, mounted_tmpfs
from tests.vision.images.test_reading import jpeg_with_orientation


def unit_vector(dim: int = 128, seed: int = 0) -> bytes:
    values = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return (values / np.linalg.norm(values)).astype("<f4").tobytes()


async def expect_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


EMBEDDING_REQUEST = admin_pb2.EnrollPersonRequest(
    person_id="alice",
    embeddings=[gallery_pb2.Embedding(model_id="sface@2021dec", dim=128, vector=unit_vector())],
)


@pytest.mark.parametrize(
    ("metadata", "expected", "detail"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <token>'"),
        ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED, "must be 'Bearer <token>'"),
        (
            (("authorization", "Bearer ff1.0011223344556677.nope"),),
            grpc.StatusCode.UNAUTHENTICATED,
            "unknown",
        ),
        ("query", grpc.StatusCode.PERMISSION_DENIED, "token 'dashboard' has role 'query'"),
        ("tampered", grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token"),
    ],
)
def test_admin_calls_need_an_admin_token(
    tmp_path: Path, pki: Pki, enroller: Enroller, metadata: object, expected: grpc.StatusCode, detail: str
) -> None:
    async def scenario() -> tuple[grpc.aio.AioRpcError, int]:
        async with serving(tmp_path, pki, enroller) as harness:
            md = metadata
            if metadata == "query":
                md = harness.query_md
            elif metadata == "tampered":
                md = (("authorization", f"Bearer {harness.admin_token[:-2]}xx"),)
            error = await expect_error(harness.admin().EnrollPerson(EMBEDDING_REQUEST, metadata=md))
            return error, harness.server.state.head_revision()

    error, revision = run(scenario)
    assert error.code() == expected
    assert detail in (error.details() or "")
    assert revision == 0


def test_a_revoked_token_stops_working(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> grpc.StatusCode:
        async with serving(tmp_path, pki, enroller, tokens={"cache_seconds": 0}) as harness:
            await harness.admin().ListPeople(admin_pb2.ListPeopleRequest(), metadata=harness.admin_md)
            harness.server.state.revoke_token("admin")
            error = await expect_error(
                harness.admin().ListPeople(admin_pb2.ListPeopleRequest(), metadata=harness.admin_md)
            )
            return error.code()

    assert run(scenario) == grpc.StatusCode.UNAUTHENTICATED


def test_enrolment_from_embeddings_and_people_listing(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> tuple[list[admin_pb2.ListPeopleResponse], admin_pb2.GetPersonResponse]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin = harness.admin()
            for i in range(5):
                await admin.EnrollPerson(
                    admin_pb2.EnrollPersonRequest(
                        person_id=f"p{i}",
                        groups=["staff"] if i % 2 == 0 else [],
                        metadata_json=f'{{"badge": {i}}}',
                        embeddings=[
                            gallery_pb2.Embedding(
                                model_id="sface@2021dec", dim=128, vector=unit_vector(seed=i)
                            )
                        ],
                    ),
                    metadata=harness.admin_md,
                )
            pages = [
                await admin.ListPeople(admin_pb2.ListPeopleRequest(page_size=2), metadata=harness.admin_md)
            ]
            while pages[-1].next_page_token:
                request = admin_pb2.ListPeopleRequest(page_size=2, page_token=pages[-1].next_page_token)
                pages.append(await admin.ListPeople(request, metadata=harness.admin_md))
            staff = await admin.ListPeople(
                admin_pb2.ListPeopleRequest(group="staff"), metadata=harness.admin_md
            )
            person = await admin.GetPerson(
                admin_pb2.GetPersonRequest(person_id="p3", include_embeddings=True), metadata=harness.admin_md
            )
            forged = []
            for token, group in (("p1", ""), ("garbage!", ""), (pages[0].next_page_token, "staff")):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await admin.ListPeople(
                        admin_pb2.ListPeopleRequest(page_size=2, page_token=token, group=group),
                        metadata=harness.admin_md,
                    )
                forged.append((refused.value.code(), refused.value.details()))
            return [*pages, staff], person, forged

    responses, person, forged = run(scenario)
    # a person id, garbage, and a token of another listing (all people, not group staff) are not tokens
    assert [code for code, _ in forged] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert all("page_token is not one this server issued" in details for _, details in forged)
    *pages, staff = responses
    assert [[p.person_id for p in page.people] for page in pages] == [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert all(page.gallery_revision == 5 for page in pages)
    assert [p.person_id for p in staff.people] == ["p0", "p2", "p4"]
    assert person.person.metadata_json == '{"badge":3}'
    assert np.frombuffer(person.person.embeddings[0].vector, dtype="<f4").tobytes() == unit_vector(seed=3)
    assert person.stored_crops == 0


def test_enrolment_modes_fail_replace_and_append(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes
) -> None:
    async def scenario() -> tuple[grpc.StatusCode, list[int]]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin, md = harness.admin(), harness.admin_md
            request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg])
            await admin.EnrollPerson(request, metadata=md)
            duplicate = await expect_error(admin.EnrollPerson(request, metadata=md))
            counts = []
            for mode in (admin_pb2.ON_EXISTING_APPEND, admin_pb2.ON_EXISTING_REPLACE):
                request.on_existing = mode
                await admin.EnrollPerson(request, metadata=md)
                got = await admin.GetPerson(admin_pb2.GetPersonRequest(person_id="eileen"), metadata=md)
                counts.extend([len(got.person.embeddings), got.stored_crops])
            return duplicate.code(), counts

    code, counts = run(scenario)
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert counts == [2, 2, 1, 1]


def test_crops_are_not_kept_when_retain_crops_is_off(
    tmp_path: Path,
    pki: Pki,
    analyzer: FaceAnalyzer,
    model_store: ModelStore,
    runtime: Runtime,
    astronaut_jpeg: bytes,
) -> None:
    no_crops = Enroller(analyzer, model_store, runtime, EnrolmentSettings(retain_crops=False))

    async def scenario() -> int:
        async with serving(tmp_path, pki, no_crops) as harness:
            request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg])
            await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
            return len(harness.server.state.crops("eileen"))

    assert run(scenario) == 0


def test_a_portrait_phone_photo_enrols_turned_upright_by_its_exif_orientation(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut: np.ndarray
) -> None:
    """Stored on its side, as phones store portrait photos, with EXIF Orientation 6 ("turn 90° clockwise")."""
    on_its_side = np.ascontiguousarray(np.rot90(astronaut, k=1))
    photo = jpeg_with_orientation(on_its_side, 6)

    async def scenario() -> tuple[int, int]:
        async with serving(tmp_path, pki, enroller) as harness:
            request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[photo])
            reply = await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
            return len(reply.faces), len(harness.server.state.crops("eileen"))

    assert run(scenario) == (1, 1)


def test_the_kept_crop_is_an_aligned_112_pixel_face(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes
) -> None:
    import cv2

    async def scenario() -> bytes:
        async with serving(tmp_path, pki, enroller) as harness:
            request = admin_pb2.EnrollPersonRequest(person_id="eileen", images=[astronaut_jpeg])
            await harness.admin().EnrollPerson(request, metadata=harness.admin_md)
            (crop,) = harness.server.state.crops("eileen")
            return crop.data

    crop = cv2.imdecode(np.frombuffer(run(scenario), np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (112, 112, 3)
    faces = enroller.analyzer.analyze(cv2.resize(crop, (224, 224)))
    assert len(faces) == 1


def bad_requests(
    astronaut_jpeg: bytes, group_jpeg: bytes, blank_jpeg: bytes
) -> list[tuple[str, admin_pb2.EnrollPersonRequest, str]]:
    def embedding(**fields: object) -> admin_pb2.EnrollPersonRequest:
        values: dict[str, object] = {"model_id": "sface@2021dec", "dim": 128, "vector": unit_vector()}
        values.update(fields)
        return admin_pb2.EnrollPersonRequest(person_id="x", embeddings=[gallery_pb2.Embedding(**values)])  # type: ignore[arg-type]

    nan = np.full(128, np.nan, dtype="<f4").tobytes()
    good = [gallery_pb2.Embedding(model_id="sface@2021dec", dim=128, vector=unit_vector())]
    request = admin_pb2.EnrollPersonRequest
    return [
        ("nothing", request(person_id="x"), "needs at least one image or embedding"),
        ("no face", request(person_id="x", images=[astronaut_jpeg, blank_jpeg]), "images[1]: no face found"),
        (
            "six faces",
            request(person_id="x", images=[group_jpeg]),
            "images[0]: 5 faces are good enough for enrolment; crop the image",
        ),
        ("not an image", request(person_id="x", images=[b"GIF89a..."]), "images[0]: not a readable image"),
        ("empty image", request(person_id="x", images=[b""]), "images[0] is empty"),
        (
            "wrong dimension",
            embedding(dim=64, vector=unit_vector(64)),
            "sface@2021dec embeddings have 128 dimensions, got 64",
        ),
        (
            "dim and bytes differ",
            embedding(dim=128, vector=unit_vector(64)),
            "vector has 256 bytes, but dim 128 needs 512",
        ),
        ("NaN", embedding(vector=nan), "NaN or infinite"),
        ("zeros", embedding(vector=bytes(512)), "all zeros"),
        ("unknown model", embedding(model_id="arcface@1"), "unknown embedding model 'arcface@1'"),
        ("bad model id", embedding(model_id="arcface"), "expected '<name>@<version>'"),
        ("bad person id", request(person_id="a b", embeddings=good), "person_id 'a b' is not valid"),
        (
            "bad metadata",
            request(person_id="x", metadata_json="[1]", embeddings=good),
            "must be a JSON object",
        ),
    ]


def test_bad_enrolments_fail_with_invalid_argument_naming_the_problem(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes, group_photo: np.ndarray
) -> None:
    blank = encode(np.full((480, 640, 3), 128, np.uint8))
    cases = bad_requests(astronaut_jpeg, encode(group_photo), blank)

    async def scenario() -> tuple[list[tuple[str, grpc.StatusCode, str]], int]:
        async with serving(tmp_path, pki, enroller) as harness:
            results = []
            for name, request, _ in cases:
                error = await expect_error(harness.admin().EnrollPerson(request, metadata=harness.admin_md))
                results.append((name, error.code(), error.details() or ""))
            return results, harness.server.state.head_revision()

    results, revision = run(scenario)
    for (name, code, details), (_, _, expected) in zip(results, cases, strict=True):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert expected in details, (name, details)
    assert revision == 0


def test_an_oversized_request_fails_with_resource_exhausted(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> tuple[grpc.StatusCode, int]:
        async with serving(tmp_path, pki, enroller, listen={"max_message_bytes": 256 * 1024}) as harness:
            request = admin_pb2.EnrollPersonRequest(person_id="x", images=[bytes(300 * 1024)])
            error = await expect_error(harness.admin().EnrollPerson(request, metadata=harness.admin_md))
            return error.code(), harness.server.state.head_revision()

    assert run(scenario) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 0)


def test_update_and_delete_of_unknown_people_fail_with_not_found(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> list[grpc.StatusCode]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin, md = harness.admin(), harness.admin_md
            calls = [
                admin.UpdatePerson(
                    admin_pb2.UpdatePersonRequest(person_id="ghost", display_name="G"), metadata=md
                ),
                admin.DeletePerson(admin_pb2.DeletePersonRequest(person_id="ghost"), metadata=md),
                admin.GetPerson(admin_pb2.GetPersonRequest(person_id="ghost"), metadata=md),
                admin.UpdatePerson(admin_pb2.UpdatePersonRequest(person_id="ghost"), metadata=md),
            ]
            return [(await expect_error(call)).code() for call in calls]

    assert run(scenario) == [grpc.StatusCode.NOT_FOUND] * 3 + [grpc.StatusCode.INVALID_ARGUMENT]


def test_update_changes_only_the_fields_it_sets(tmp_path: Path, pki: Pki, enroller: Enroller) -> None:
    async def scenario() -> admin_pb2.UpdatePersonResponse:
        async with serving(tmp_path, pki, enroller) as harness:
            admin, md = harness.admin(), harness.admin_md
            request = admin_pb2.EnrollPersonRequest(
                person_id="alice",
                display_name="Alice",
                groups=["staff"],
                embeddings=EMBEDDING_REQUEST.embeddings,
            )
            await admin.EnrollPerson(request, metadata=md)
            update = admin_pb2.UpdatePersonRequest(
                person_id="alice", groups=admin_pb2.GroupList(groups=["night"])
            )
            return await admin.UpdatePerson(update, metadata=md)

    reply = run(scenario)
    assert (reply.person.display_name, list(reply.person.groups), reply.revision) == ("Alice", ["night"], 2)
    assert reply.person.embeddings[0].vector == b""  # listed without the vector


def test_enrolment_on_a_full_disk_fails_with_resource_exhausted_and_succeeds_once_space_returns(
    tmp_path: Path, pki: Pki, enroller: Enroller, caplog: pytest.LogCaptureFixture
) -> None:
    def request(person_id: str) -> admin_pb2.EnrollPersonRequest:
        return admin_pb2.EnrollPersonRequest(person_id=person_id, embeddings=EMBEDDING_REQUEST.embeddings)

    async def scenario() -> tuple[grpc.aio.AioRpcError, list[str], int]:
        async with serving(tmp_path, pki, enroller) as harness:
            admin, md = harness.admin(), harness.admin_md
            await admin.EnrollPerson(request("alice"), metadata=md)
            filler = fill(tmp_path / "state")
            for attempt in range(50):  # one usually fails at once; a write may fit in reused WAL frames
                try:
                    await admin.EnrollPerson(request(f"p{attempt}"), metadata=md)
                except grpc.aio.AioRpcError as exc:
                    refused = exc
                    break
            else:
                pytest.fail("50 enrolments on a full disk all succeeded")
            listed = await admin.ListPeople(admin_pb2.ListPeopleRequest(), metadata=md)
            filler.unlink()
            after = await admin.EnrollPerson(request("after"), metadata=md)
            return refused, [p.person_id for p in listed.people], after.revision

    with mounted_tmpfs(tmp_path / "state", "4m"), caplog.at_level(logging.WARNING):
        refused, listed, revision = run(scenario)
    database = tmp_path / "state" / "server.db"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"free space on the disk holding {database}" in (refused.details() or "")
    assert listed[0] == "alice"
    assert "after" not in listed
    assert revision == len(listed) + 1
    assert "cannot rollback" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert any(str(database) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
