"""The web console in Debian's Chromium against the whole system: a real server, a real agent watching a
video (swapped to show a person, a stranger or nobody), real mosquitto (see conftest.py).

The flows of the issue, each in a fresh browser context, in this order (each sets the camera up as it needs,
so each also runs alone): sign-in and the fleet; enrolment from a photo and the agent's decision in the
activity and at the door; an unknown face enrolled from its cluster and then recognised by the agent; a
rollout started and rolled back; a query token's read-only console and its forged changes refused (these are
marked slow: they need the agent); then, with the server alone, changes without the session's CSRF token
refused, the session cookie out of the page's reach, sign-out and the Content-Security-Policy, a wrong
token refused at sign-in, and a cluster that a face joined while it was on screen shown again before it is
enrolled. Each page is screenshotted into test-output/console/."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import FilePayload, Locator, Page, expect

from facefleet.link.checks import utc_now
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding
from facefleet.vision.photos import sample_photo
from tests.console.conftest import (
    ADMIN_ONLY,
    CAMERA,
    DEVICE,
    DOOR,
    NAV,
    Console,
    Consoles,
    Fleet,
    Server,
    person_by_name,
    until,
)

OLD = "mini-xception@fer2013"
NEW = "mini-xception@fer2013-fp32"
MODEL_FIELDS = {"task": "expression", "name": "mini-xception", "version": "fer2013-fp32", "precision": "FP32"}
ACTIONS = re.compile(
    r"^(enrol|enroll|add|save|delete|dismiss|disable|enable|revoke|wipe|start|pause|resume|roll ?back|retire|"
    r"publish|upload)\b",
    re.IGNORECASE,
)
"""Names of buttons that change something; a query session must see none of them."""


def photo_form(display_name: str) -> dict[str, str | float | bool | bytes | FilePayload]:
    """A multipart enrolment of the astronaut photo, as the People page sends it."""
    photo = sample_photo("astronaut")
    image: FilePayload = {"name": photo.name, "mimeType": "image/png", "buffer": photo.read_bytes()}
    return {"display_name": display_name, "images": image}


def buttons(page: Page) -> list[str]:
    return [name.strip() for name in page.get_by_role("button").all_inner_texts()]


def main(page: Page) -> Locator:
    return page.get_by_role("main")


def exactly(text: str) -> re.Pattern[str]:
    """A whole element's text, e.g. one list item."""
    return re.compile(f"^{re.escape(text)}$")


def cell(table: Locator, row: Locator, column: str) -> Locator:
    """The cell of `row` under the column whose header starts with `column` (headers may carry sort
    marks), found by the header's position."""
    expect(table.get_by_role("columnheader").first).to_be_visible()
    headers = [h.strip() for h in table.get_by_role("columnheader").all_inner_texts()]
    index = next((i for i, h in enumerate(headers) if h.startswith(column)), None)
    assert index is not None, f"no column {column!r} in {headers}"
    return row.locator(":scope > th, :scope > td").nth(index)


@pytest.mark.slow  # an agent on OpenVINO and mosquitto too
def test_an_admin_signs_in_and_sees_the_agent_online_with_its_versions(
    consoles: Consoles, fleet: Fleet
) -> None:
    admin = consoles.new()
    admin.open()
    expect(admin.page.get_by_label("Token")).to_be_visible()
    expect(admin.nav_link("Fleet")).to_have_count(0)  # nothing but the sign-in form before signing in
    admin.sign_in(fleet.harness.admin_token)
    for name in NAV:
        expect(admin.nav_link(name)).to_be_visible()

    admin.go("Fleet")
    agent = fleet.agent_row()
    assert agent is not None and agent["online"] and agent["agent_version"]
    table = main(admin.page).get_by_role("table", name="Agents")
    row = table.get_by_role("row").filter(has_text=DEVICE)
    expect(row).to_have_count(1)
    expect(cell(table, row, "State")).to_contain_text("Online")
    versions = cell(table, row, "Versions").get_by_role("listitem")
    assert {"detection", "embedding", "expression"} <= set(agent["model_versions"]), agent["model_versions"]
    precisions = agent["model_precisions"]  # what the agent registered with
    assert set(precisions) == set(agent["model_versions"]), precisions
    expect(versions.filter(has_text=exactly(f"agent: {agent['agent_version']}"))).to_have_count(1)
    for task, version in agent["model_versions"].items():
        shown = f"{task}: {version} at {precisions[task]}"
        expect(versions.filter(has_text=exactly(shown))).to_have_count(1)
    admin.screenshot("fleet")

    admin.page.reload()  # the session outlives a reload: the cookie, not the page, holds it
    expect(admin.sign_out_control()).to_be_visible()


@pytest.mark.slow  # an agent on OpenVINO and mosquitto too
def test_a_person_enrolled_from_a_photo_is_recognised_by_the_agent_and_shows_in_the_activity(
    consoles: Consoles, fleet: Fleet
) -> None:
    admin = consoles.signed_in(fleet.harness.admin_token)
    admin.go("People")
    page = admin.page
    page.get_by_label("Name", exact=True).fill("Eileen Collins")
    page.get_by_label("Groups", exact=True).fill("staff")
    page.get_by_label("Photos", exact=True).set_input_files(sample_photo("astronaut"))
    page.get_by_role("button", name="Enrol", exact=True).click()
    expect(main(page).get_by_role("status").filter(has_text="Enrolled Eileen Collins")).to_be_visible(
        timeout=30_000
    )
    people = main(page).get_by_role("table", name="Enrolled people")
    enrolled = people.get_by_role("row").filter(has_text="Eileen Collins")
    expect(enrolled).to_have_count(1)
    expect(cell(people, enrolled, "Groups")).to_have_text("staff")
    person = person_by_name(fleet, "Eileen Collins")
    assert person is not None and person["groups"] == ["staff"], person
    person_id = person["person_id"]
    expect(enrolled).to_contain_text(person_id)
    admin.screenshot("people")

    fleet.show("astronaut")
    decided = until(
        lambda: [
            e
            for e in fleet.events(person_id=person_id, kind="face")
            if e["decision"] == "match" and e["device_id"] == DEVICE
        ],
        timeout=60,
        what="the agent's event deciding the camera sees Eileen Collins",
    )
    assert decided[0]["camera"] == CAMERA

    admin.go("Activity")
    events = main(page).get_by_role("table").filter(has=page.get_by_role("columnheader", name="Expression"))
    row = events.get_by_role("row").filter(has_text="Eileen Collins").filter(has_text="match").first
    expect(row).to_be_visible(timeout=20_000)
    expect(row).to_contain_text(DEVICE)
    expect(row).to_contain_text(CAMERA)
    admin.screenshot("activity")

    until(
        lambda: any(d["door"] == DOOR and d["granted"] > 0 for d in fleet.get("/api/events/access")["doors"]),
        timeout=30,
        what="the door granting Eileen Collins (group staff)",
    )
    admin.go("Doors")
    door = main(page).get_by_role("table", name="Decisions per door").get_by_role("row").filter(has_text=DOOR)
    expect(door).to_have_count(1, timeout=20_000)
    expect(door).to_contain_text(DEVICE)
    granted = main(page).get_by_role("row").filter(has_text="Eileen Collins").filter(has_text="granted")
    expect(granted.first).to_be_visible(timeout=20_000)
    admin.screenshot("doors")
    fleet.show(None)

    admin.go("People")  # the list shows the person's face crop and how many crops are kept
    expect(cell(people, enrolled, "Face crops")).to_have_text("1")
    expect(cell(people, enrolled, "Photo").get_by_role("img", name="Face of Eileen Collins")).to_be_visible()


@pytest.mark.slow  # an agent on OpenVINO and mosquitto too
def test_an_unknown_face_is_enrolled_from_its_cluster_and_the_agent_then_recognises_the_person(
    consoles: Consoles, fleet: Fleet
) -> None:
    admin = consoles.signed_in(fleet.harness.admin_token)
    fleet.show("stranger")
    clusters = until(
        lambda: fleet.get("/api/unknown/clusters")["clusters"],
        timeout=90,
        what="a cluster of the stranger's snapshots on the server",
    )
    assert len(clusters) == 1 and clusters[0]["cameras"] == [f"{DEVICE}/{CAMERA}"], clusters
    cluster_id = clusters[0]["cluster_id"]

    admin.go("Unknown faces")
    page = admin.page
    cluster = main(page).get_by_role("article").filter(has_text=f"{DEVICE}/{CAMERA}")
    expect(cluster).to_have_count(1, timeout=20_000)
    expect(cluster.get_by_role("img").first).to_be_visible()
    admin.screenshot("unknown-faces")
    cluster.get_by_role("button", name="Enrol as new person").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill("Visitor One")
    dialog.get_by_label("Groups", exact=True).fill("visitors")
    changed = dialog.get_by_text("Faces joined or left this cluster since it was shown")
    with admin.expecting(
        r"status of 409"
    ):  # the stranger comes back every 3 s: a sighting may join meanwhile
        for _ in range(5):
            dialog.get_by_role("button", name="Enrol", exact=True).click()
            until(lambda: dialog.count() == 0 or changed.is_visible(), what="the enrolment answered")
            if dialog.count() == 0:
                break
    expect(dialog).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text="as Visitor One")).to_be_visible(timeout=30_000)
    expect(main(page).locator(f'article[data-cluster-id="{cluster_id}"]')).to_have_count(0)

    person = person_by_name(fleet, "Visitor One")
    assert person is not None, fleet.get("/api/people")
    decided = until(
        lambda: [p for p in fleet.face_events_on_mqtt() if p["identity"]["person_id"] == person["person_id"]],
        timeout=60,
        what="the agent publishing events/face decided as Visitor One",
    )
    assert decided[0]["identity"]["status"] == "match"
    assert decided[0]["camera"] == CAMERA
    assert cluster_id not in [c["cluster_id"] for c in fleet.get("/api/unknown/clusters")["clusters"]]
    fleet.show(None)


def publish_new_version(fleet: Fleet, model_irs: dict[str, Path]) -> None:
    """The new expression version in the server's catalogue, published through the API (the console
    starts and rolls back rollouts; publishing uploads a model from the command line or the API)."""
    files = [
        ("files", (name, (model_irs[NEW] / name).read_bytes(), "application/octet-stream"))
        for name in ("model.xml", "model.bin")
    ]
    response = fleet.api.post("/api/models", data=MODEL_FIELDS, files=files)
    assert response.status_code == 201, response.text


def expression_on_agent(fleet: Fleet) -> str:
    """The expression model the agent runs now."""
    model = fleet.agent.analyzer.expression_model
    return "" if model is None else model.manifest.model_id


@pytest.mark.slow  # an agent on OpenVINO and mosquitto too
def test_a_rollout_is_started_and_rolled_back_from_the_rollouts_page(
    consoles: Consoles, fleet: Fleet, model_irs: dict[str, Path]
) -> None:
    publish_new_version(fleet, model_irs)
    assert expression_on_agent(fleet) == OLD
    admin = consoles.signed_in(fleet.harness.admin_token)
    admin.go("Rollouts")
    page = admin.page
    page.get_by_label("Model", exact=True).select_option(NEW)
    page.get_by_label("Target", exact=True).select_option(label="All agents")
    page.get_by_role("button", name="Start rollout").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    table = main(page).get_by_role("table", name="Rollouts, newest first")
    row = table.get_by_role("row").filter(has_text=NEW)
    expect(row).to_have_count(1)
    expect(cell(table, row, "State")).to_have_text("active")
    expect(cell(table, row, "Target")).to_have_text("All agents")
    until(lambda: expression_on_agent(fleet) == NEW, timeout=90, what="the agent switching to " + NEW)
    progress = cell(table, row, "Progress")
    expect(progress).to_contain_text("1 of 1 agent active", timeout=20_000)  # the list refreshes every 10 s
    admin.screenshot("rollouts")

    row.get_by_role("link", name=re.compile(r"^Rollout \d+$")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Rollout \d+$"))
    page.get_by_role("button", name="Roll back").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("previous model")
    dialog.get_by_role("button", name="Confirm").click()
    expect(main(page).get_by_text("rolled back", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Roll back")).to_have_count(0)
    (rollout,) = fleet.get("/api/rollouts")["rollouts"]
    assert (rollout["model_id"], rollout["state"]) == (NEW, "rolled_back")
    until(lambda: expression_on_agent(fleet) == OLD, timeout=90, what="the agent back on " + OLD)
    admin.screenshot("rollout")

    until(
        lambda: (fleet.agent_row() or {}).get("model_versions", {}).get("expression") == OLD,
        what="the server seeing the agent back on " + OLD,
    )
    admin.go("Fleet")
    agents = main(page).get_by_role("table", name="Agents")
    versions = cell(agents, agents.get_by_role("row").filter(has_text=DEVICE), "Versions")
    runs_at = (fleet.agent_row() or {})["model_precisions"]["expression"]  # reported with the switch back
    shown = f"expression: {OLD} at {runs_at}"
    expression = versions.get_by_role("listitem").filter(has_text=exactly(shown))
    expect(expression).to_have_count(1, timeout=10_000)  # the fleet page refreshes every 5 s


@pytest.mark.slow  # an agent on OpenVINO and mosquitto too
def test_a_query_session_sees_no_actions_and_its_forged_change_is_refused(
    consoles: Consoles, fleet: Fleet
) -> None:
    if not fleet.events(kind="access"):  # run alone: give the pages something to show (and offer actions on)
        fleet.show("stranger")
        until(lambda: fleet.events(kind="access"), timeout=30, what="the door deciding on the stranger")
        fleet.show(None)
    viewer = consoles.signed_in(fleet.harness.query_token)
    expect(viewer.page.get_by_role("banner")).to_contain_text("query")
    for name in ADMIN_ONLY:
        expect(viewer.nav_link(name)).to_have_count(0)
    viewer.page.goto(fleet.url + "/console/#/people")  # typed in: the console says no and shows the fleet
    expect(viewer.page.get_by_role("heading", name="Fleet", exact=True)).to_be_visible()
    expect(viewer.page.get_by_role("alert")).to_contain_text("People needs an admin token")
    shown = {
        "Fleet": main(viewer.page).get_by_role("row").filter(has_text=DEVICE),
        "Activity": main(viewer.page).get_by_role("row").filter(has_text=DEVICE),
        "Doors": main(viewer.page).get_by_role("row").filter(has_text=DOOR),
    }
    for name, content in shown.items():
        viewer.go(name)
        expect(content.first).to_be_visible(timeout=10_000)
        actions = [b for b in buttons(viewer.page) if ACTIONS.search(b)]
        assert actions == [], f"{name}: a query session is offered {actions}"

    csrf = viewer.csrf()
    assert viewer.session()["role"] == "query"
    before = fleet.get("/api/people")["people"]
    forged = viewer.page.request.post(
        fleet.url + "/api/people", headers={"X-CSRF-Token": csrf}, multipart=photo_form("Mallory")
    )
    assert forged.status == 403, forged.text()
    assert forged.json()["code"] == "PERMISSION_DENIED"
    rollout = viewer.page.request.post(
        fleet.url + "/api/rollouts",
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
        data=json.dumps({"model_id": OLD, "target": {"kind": "all"}}),
    )
    assert rollout.status == 403, rollout.text()
    assert fleet.get("/api/people")["people"] == before


def test_changes_with_a_session_cookie_need_its_csrf_token(consoles: Consoles, server: Server) -> None:
    admin = consoles.signed_in(server.harness.admin_token)
    request = admin.page.request
    csrf = admin.csrf()
    form = photo_form("Forged")
    before = server.get("/api/people")["people"]
    refused = {
        "POST without the token": request.post(server.url + "/api/people", multipart=form),
        "DELETE without the token": request.delete(server.url + "/api/people/nobody"),
        "POST with a wrong token": request.post(
            server.url + "/api/people", multipart=form, headers={"X-CSRF-Token": csrf[::-1]}
        ),
        "DELETE with another origin": request.delete(
            server.url + "/api/people/nobody",
            headers={"X-CSRF-Token": csrf, "Origin": "https://elsewhere.example"},
        ),
        "sign-out without the token": request.delete(server.url + "/api/session"),
    }
    for what, response in refused.items():
        assert response.status == 403, f"{what}: {response.status} {response.text()}"
        assert response.json()["code"] == "PERMISSION_DENIED", what
    assert server.get("/api/people")["people"] == before
    assert admin.session()["role"] == "admin"  # still signed in
    # With the token the same call gets past the check: there is no such person.
    allowed = request.delete(server.url + "/api/people/nobody", headers={"X-CSRF-Token": csrf})
    assert allowed.status == 404, allowed.text()


def test_the_session_cookie_stays_out_of_the_page_and_sign_out_ends_the_session(
    consoles: Consoles, server: Server
) -> None:
    admin = consoles.new()
    document = admin.open()
    policy = document.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, policy
    admin.sign_in(server.harness.admin_token)

    (cookie,) = admin.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
        "facefleet_session",
        True,
        True,
        "Strict",
    ), cookie
    assert cookie["value"] not in admin.page.evaluate("document.cookie")
    stored = admin.page.evaluate(
        "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    for secret in (server.harness.admin_token, cookie["value"], admin.csrf()):
        assert secret not in stored, stored
    api = admin.page.request.get(server.url + "/api/fleet")
    assert api.status == 200
    api_policy = api.headers["content-security-policy"]
    assert "unsafe-inline" not in api_policy and "unsafe-eval" not in api_policy, api_policy

    admin.sign_out_control().click()
    expect(admin.page.get_by_label("Token")).to_be_visible()
    assert [c for c in admin.context.cookies() if c["name"] == "facefleet_session"] == []
    admin.context.add_cookies(  # the old cookie, kept by someone: its session is over
        [
            {
                "name": cookie["name"],
                "value": cookie["value"],
                "domain": cookie["domain"],
                "path": cookie["path"],
                "secure": True,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    after = admin.page.request.get(server.url + "/api/fleet")
    assert after.status == 401, after.text()


def test_a_wrong_token_is_refused_at_sign_in(consoles: Consoles, server: Server) -> None:
    visitor: Console = consoles.new()
    visitor.open()
    with visitor.expecting(r"status of 401"):
        visitor.page.get_by_label("Token").fill("not-a-token")
        visitor.page.get_by_role("button", name="Sign in").click()
        expect(visitor.page.get_by_role("alert")).to_contain_text(re.compile("token", re.IGNORECASE))
    assert visitor.context.cookies() == []
    expect(visitor.nav_link("Fleet")).to_have_count(0)


def test_a_cluster_a_face_joined_on_screen_is_shown_again_and_enrolled_once_confirmed(
    consoles: Consoles, server: Server
) -> None:
    """Two sightings of a stranger are on the Unknown faces page; a third joins their cluster while the
    operator fills in the enrolment: it is refused, the cluster is shown again with three faces, and Enrol
    pressed again enrols the three."""
    rng = np.random.default_rng(21)
    person = rng.normal(size=128)
    now = utc_now()

    def sighting(seconds_ago: int) -> Event:
        vector = (person + rng.normal(scale=0.05, size=128)).astype(np.float32)
        ok, crop = cv2.imencode(".jpg", rng.integers(0, 255, size=(112, 112, 3), dtype=np.uint8))
        assert ok
        snapshot = FaceSnapshot(
            crop.tobytes(), b"", Embedding("sface@2021dec", vector / np.linalg.norm(vector))
        )
        return Event(str(uuid.uuid4()), "door-2", now - timedelta(seconds=seconds_ago), "face", "unknown",
                     camera="side", snapshot=snapshot)  # fmt: skip

    first, second, third = sighting(30), sighting(20), sighting(10)
    state = server.harness.server.state  # type: ignore[union-attr]
    state.add_events([first, second])
    admin = consoles.signed_in(server.harness.admin_token)
    admin.go("Unknown faces")
    page = admin.page
    cluster = main(page).locator(f'article[data-cluster-id="{first.event_id}"]')
    expect(cluster.get_by_role("heading")).to_have_text(re.compile(r": 2 faces$"))
    expect(cluster.get_by_role("img")).to_have_count(2)
    cluster.get_by_role("button", name="Enrol as new person").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill("Visitor Two")
    state.add_events([third])
    with admin.expecting(r"status of 409"):
        dialog.get_by_role("button", name="Enrol", exact=True).click()
        expect(dialog).to_contain_text("Faces joined or left this cluster since it was shown")
    expect(cluster.get_by_role("heading")).to_have_text(re.compile(r": 3 faces$"))
    expect(cluster.get_by_role("img")).to_have_count(3)
    assert person_by_name(server, "Visitor Two") is None
    dialog.get_by_role("button", name="Enrol", exact=True).click()
    expect(dialog).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text="Enrolled 3 faces as Visitor Two")).to_be_visible()
    assert person_by_name(server, "Visitor Two") is not None
