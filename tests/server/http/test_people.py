"""/api/people over HTTPS on a real server: enrolment from uploaded real photos, listing, paging, changes,
face crops as JPEG, the admin audit log, and bad input (refused images each named, uploads over the limit,
path tricks, unknown ids, wrong tokens) with nothing half-stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facefleet.server.gallery.embedder import Enroller
from tests.server.conftest import Harness, Pki, encode, run, serving
from tests.server.http.clients import client, problem

Files = list[tuple[str, tuple[str, bytes, str]]]


def images(*named: tuple[str, bytes]) -> Files:
    return [("images", (name, data, "image/jpeg")) for name, data in named]


def mirrored(image: npt.NDArray[np.uint8]) -> bytes:
    return encode(np.ascontiguousarray(image[:, ::-1]))


async def audit(harness: Harness, **params: Any) -> list[tuple[str, str, str, str]]:
    """(who, action, target, outcome) of the audit log, oldest first."""
    async with client(harness) as http:
        response = await http.get("/api/audit", params=params)
    assert response.status_code == 200, response.text
    return [(e["who"], e["action"], e["target"], e["outcome"]) for e in reversed(response.json()["entries"])]


def test_people_are_enrolled_from_photos_listed_changed_shown_as_jpeg_crops_and_deleted(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    astronaut_jpeg: bytes,
    astronaut: npt.NDArray[np.uint8],
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            enrolled = await http.post(
                "/api/people",
                data={
                    "person_id": "eileen",
                    "display_name": "Eileen Collins",
                    "groups": ["staff", "crew"],
                    "metadata": '{"badge": 7}',
                },
                files=images(("front.jpg", astronaut_jpeg), ("mirror.jpg", mirrored(astronaut))),
            )
            assert enrolled.status_code == 201, enrolled.text
            body = enrolled.json()
            person = body["person"]
            assert (person["person_id"], person["display_name"], person["groups"], person["metadata"]) == (
                "eileen",
                "Eileen Collins",
                ["staff", "crew"],
                {"badge": 7},
            )
            assert [(f["image_index"], f["filename"]) for f in body["faces"]] == [
                (0, "front.jpg"),
                (1, "mirror.jpg"),
            ]
            left, top, right, bottom = body["faces"][0]["box_xyxy"]
            assert 0 <= left < right <= astronaut.shape[1] and 0 <= top < bottom <= astronaut.shape[0]
            assert sorted(e["source"] for e in person["embeddings"]) == ["image:0", "image:1"]
            assert all(e["vector"] is None and e["dim"] == 128 for e in person["embeddings"])
            assert body["revision"] == person["revision"] == harness.server.state.head_revision() == 1

            assigned = await http.post("/api/people", files=images(("m.jpg", mirrored(astronaut))))
            assert assigned.status_code == 201, assigned.text
            other = assigned.json()["person"]["person_id"]
            assert len(other) == 36  # a UUID

            pages = [(await http.get("/api/people", params={"page_size": 1})).json()]
            while pages[-1]["next_page_token"]:
                params = {"page_size": 1, "page_token": pages[-1]["next_page_token"]}
                pages.append((await http.get("/api/people", params=params)).json())
            listed = [p["person_id"] for page in pages for p in page["people"]]
            assert listed == sorted(["eileen", other]) and len(pages) <= 3
            staff = (await http.get("/api/people", params={"group": "staff"})).json()
            assert [p["person_id"] for p in staff["people"]] == ["eileen"]
            assert staff["gallery_revision"] == 2
            assert staff["people"][0]["stored_crops"] == 2
            found = (await http.get("/api/people", params={"q": "EILE"})).json()["people"]
            assert [(p["person_id"], p["stored_crops"]) for p in found] == [("eileen", 2)]
            assert (await http.get("/api/people", params={"q": "nobody"})).json()["people"] == []
            problem(await http.get("/api/people", params={"q": "x" * 129}), 400, "INVALID_ARGUMENT")
            asked = [("person_id", "eileen"), ("person_id", "nobody"), ("person_id", other)]
            by_id = (await http.get("/api/people", params=asked)).json()["people"]
            assert [p["person_id"] for p in by_id] == sorted(["eileen", other])
            too_many = [("person_id", f"p{i}") for i in range(101)]
            problem(await http.get("/api/people", params=too_many), 400, "INVALID_ARGUMENT")
            problem(await http.get("/api/people", params={"person_id": "../x"}), 400, "INVALID_ARGUMENT")

            shown = (await http.get("/api/people/eileen", params={"include_embeddings": "true"})).json()
            assert shown["stored_crops"] == 2
            vector = np.array(shown["person"]["embeddings"][0]["vector"], np.float32)
            assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4

            stored = harness.server.state.crops("eileen")
            assert stored[0].image_format == "png"  # the server keeps PNG; the API answers JPEG
            crop = await http.get("/api/people/eileen/crops/1")
            assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
            assert crop.headers["cache-control"] == "no-store"  # no face left in the browser's cache
            assert crop.content.startswith(b"\xff\xd8\xff")
            decoded = cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR)
            original = cv2.imdecode(np.frombuffer(stored[1].data, np.uint8), cv2.IMREAD_COLOR)
            assert decoded.shape == (112, 112, 3)
            assert float(np.abs(decoded.astype(np.int16) - original).mean()) < 4  # the same face
            problem(await http.get("/api/people/eileen/crops/2"), 404, "NOT_FOUND")

            updated = await http.patch(
                "/api/people/eileen", json={"display_name": "E. Collins", "metadata": {"badge": 8}}
            )
            assert updated.status_code == 200, updated.text
            changed = updated.json()["person"]
            assert (changed["display_name"], changed["groups"], changed["metadata"]) == (
                "E. Collins",
                ["staff", "crew"],
                {"badge": 8},
            )
            assert updated.json()["revision"] == 3
            again = await http.post(
                "/api/people",
                data={"person_id": "eileen", "on_existing": "append"},
                files=images(("more.jpg", astronaut_jpeg)),
            )
            assert len(again.json()["person"]["embeddings"]) == 3
            problem(
                await http.post(
                    "/api/people", data={"person_id": "eileen"}, files=images(("x.jpg", astronaut_jpeg))
                ),
                409,
                "ALREADY_EXISTS",
            )

            deleted = await http.delete("/api/people/eileen")
            assert deleted.json() == {"revision": 5}
            problem(await http.get("/api/people/eileen"), 404, "NOT_FOUND")
            assert harness.server.state.crops("eileen") == []

            assert await audit(harness, action_prefix="people") == [
                ("admin", "people.enrol", "eileen", "ok"),
                ("admin", "people.enrol", other, "ok"),
                ("admin", "people.update", "eileen", "ok"),
                ("admin", "people.enrol", "eileen", "ok"),
                ("admin", "people.enrol", "eileen", "ALREADY_EXISTS"),
                ("admin", "people.delete", "eileen", "ok"),
            ]

    run(scenario)


def test_every_refused_photo_is_named_with_its_reason_and_nothing_is_stored(
    tmp_path: Path,
    pki: Pki,
    enroller: Enroller,
    astronaut_jpeg: bytes,
    group_photo: npt.NDArray[np.uint8],
) -> None:
    blank = encode(np.full((480, 640, 3), 128, np.uint8))

    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            response = await http.post(
                "/api/people",
                data={"person_id": "mixed"},
                files=images(
                    ("good.jpg", astronaut_jpeg),
                    ("notes.txt", b"not an image at all"),
                    ("empty.jpg", b""),
                    ("wall.jpg", blank),
                    ("crowd.jpg", encode(group_photo)),
                ),
            )
            body = problem(response, 400, "INVALID_ARGUMENT")
            people = (await http.get("/api/people")).json()["people"]
            return {
                "body": body,
                "people": people,
                "revision": harness.server.state.head_revision(),
                "audit": await audit(harness),
            }

    result = run(scenario)
    refused = {r["index"]: (r["filename"], r["reason"]) for r in result["body"]["images"]}
    assert sorted(refused) == [1, 2, 3, 4]
    assert refused[1][0] == "notes.txt" and "not a readable image" in refused[1][1]
    assert refused[2][0] == "empty.jpg" and "is empty" in refused[2][1]
    assert refused[3][0] == "wall.jpg" and "no face found" in refused[3][1]
    assert refused[4][0] == "crowd.jpg" and "faces are good enough" in refused[4][1]
    assert "4 of 5 images cannot be enrolled" in result["body"]["detail"]
    assert (result["people"], result["revision"]) == ([], 0)
    assert result["audit"] == [("admin", "people.enrol", "mixed", "INVALID_ARGUMENT")]


@pytest.mark.parametrize(
    ("name", "status", "code", "detail"),
    [
        ("../evil.jpg", 400, "INVALID_ARGUMENT", "has path parts"),
        ("photos/face.jpg", 400, "INVALID_ARGUMENT", "has path parts"),
        ("..", 400, "INVALID_ARGUMENT", "has path parts"),
        ("C:\\photos\\face.jpg", 400, "INVALID_ARGUMENT", "has path parts"),
    ],
)
def test_file_names_with_path_parts_are_refused(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes, name: str, status: int, code: str,
    detail: str,
) -> None:  # fmt: skip
    async def scenario() -> tuple[dict[str, Any], int]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            response = await http.post("/api/people", files=images((name, astronaut_jpeg)))
            return problem(response, status, code), harness.server.state.head_revision()

    body, revision = run(scenario)
    assert detail in body["detail"]
    assert revision == 0


def test_uploads_over_the_limit_are_refused_with_413_and_store_nothing(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes
) -> None:
    limit = 128 * 1024
    assert len(astronaut_jpeg) < limit < 3 * len(astronaut_jpeg)

    async def scenario() -> list[Any]:
        config = {"gallery": {"max_image_bytes": limit}, "listen": {"max_message_bytes": 2 * limit}}
        async with serving(tmp_path, pki, enroller, **config) as harness, client(harness) as http:
            one_big = await http.post("/api/people", files=images(("big.jpg", bytes(limit + 1))))
            together = await http.post(
                "/api/people", files=images(*[(f"{i}.jpg", astronaut_jpeg) for i in range(3)])
            )
            huge = await http.post("/api/people", files=images(("huge.jpg", bytes(8 << 20))))
            json_body = await http.patch("/api/people/x", json={"display_name": "x" * (2 << 20)})
            still_fine = await http.post("/api/people", files=images(("ok.jpg", astronaut_jpeg)))
            return [
                problem(one_big, 413, "RESOURCE_EXHAUSTED"),
                problem(together, 413, "RESOURCE_EXHAUSTED"),
                problem(huge, 413, "RESOURCE_EXHAUSTED"),
                problem(json_body, 413, "RESOURCE_EXHAUSTED"),
                still_fine.status_code,
                harness.server.state.head_revision(),
            ]

    one_big, together, huge, json_body, fine, revision = run(scenario)
    assert "file 'big.jpg' is over the limit of 131072 bytes" in one_big["detail"]
    assert "gallery.max_image_bytes" in one_big["detail"]
    assert "together" in together["detail"]
    assert "over the limit" in huge["detail"]
    assert "over the limit of 1048576" in json_body["detail"]
    assert (fine, revision) == (201, 1)  # only the enrolment within the limits


def test_unknown_people_are_404_and_malformed_requests_400(
    tmp_path: Path, pki: Pki, enroller: Enroller
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with serving(tmp_path, pki, enroller) as harness, client(harness) as http:
            return [
                problem(await http.get("/api/people/nobody"), 404, "NOT_FOUND"),
                problem(await http.patch("/api/people/nobody", json={"display_name": "N"}), 404, "NOT_FOUND"),
                problem(await http.delete("/api/people/nobody"), 404, "NOT_FOUND"),
                problem(await http.get("/api/people/nobody/crops/0"), 404, "NOT_FOUND"),
                problem(await http.get("/api/people/bad%20id"), 400, "INVALID_ARGUMENT"),
                problem(await http.patch("/api/people/nobody", json={}), 400, "INVALID_ARGUMENT"),
                problem(await http.patch("/api/people/n", json={"colour": "red"}), 400, "INVALID_ARGUMENT"),
                problem(await http.get("/api/people", params={"page_size": 5000}), 400, "INVALID_ARGUMENT"),
                problem(
                    await http.get("/api/people", params={"page_token": "junk"}), 400, "INVALID_ARGUMENT"
                ),
                problem(await http.post("/api/people", json={"person_id": "x"}), 400, "INVALID_ARGUMENT"),
                problem(
                    await http.post("/api/people", data={"person_id": "x"}, files=[]), 400, "INVALID_ARGUMENT"
                ),
                problem(await http.get("/api/nowhere"), 404, "NOT_FOUND"),
                problem(await http.put("/api/people"), 405, "UNIMPLEMENTED"),
            ]

    results = run(scenario)
    assert "'bad id' is not valid" in results[4]["detail"]
    assert "nothing to change" in results[5]["detail"]
    assert results[6]["errors"][0]["field"] == "colour"
    assert "multipart/form-data" in results[9]["detail"]
    assert "/api/openapi.json" in results[11]["detail"]


def test_tokens_are_checked_before_anything_is_read_or_stored(
    tmp_path: Path, pki: Pki, enroller: Enroller, astronaut_jpeg: bytes
) -> None:
    async def scenario() -> dict[str, Any]:
        async with serving(tmp_path, pki, enroller) as harness:
            upload = images(("face.jpg", astronaut_jpeg))
            async with client(harness, "") as anonymous:
                missing = await anonymous.post("/api/people", files=upload)
                basic = await anonymous.get("/api/people", headers={"Authorization": "Basic YTpi"})
            async with client(harness, "ff1.0011223344556677.nope") as forged:
                unknown = await forged.get("/api/people")
            async with client(harness, harness.query_token) as dashboard:
                denied = await dashboard.post("/api/people", files=upload)
                denied_read = await dashboard.get("/api/people/anyone")
            return {
                "missing": missing,
                "basic": basic,
                "unknown": unknown,
                "denied": problem(denied, 403, "PERMISSION_DENIED"),
                "denied_read": problem(denied_read, 403, "PERMISSION_DENIED"),
                "revision": harness.server.state.head_revision(),
                "audit": await audit(harness),
            }

    r = run(scenario)
    for name in ("missing", "basic", "unknown"):
        problem(r[name], 401, "UNAUTHENTICATED")
        assert r[name].headers["www-authenticate"] == 'Bearer realm="facefleet"'
    assert "Authorization: Bearer <token>" in r["missing"].json()["detail"]
    assert "unknown or revoked token" in r["unknown"].json()["detail"]
    assert "token 'dashboard' has role 'query'" in r["denied"]["detail"]
    assert r["revision"] == 0
    assert r["audit"] == []  # refused before authentication: nothing to record
