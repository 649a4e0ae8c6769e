"""The console's pages when things change under them, with the server alone (see conftest.py): unknown-face
clusters that change while on screen, clusters with more faces than are shown at first, live tables, a
server that stops answering, an ended session, long names. Each test opens its own browser context."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import cv2
import numpy as np
from playwright.sync_api import Locator, Page, Route, expect

from facefleet.link.checks import utc_now
from facefleet.link.events import Event, FaceSnapshot
from facefleet.link.gallery import Embedding, Person
from facefleet.link.models import ModelFile
from facefleet.server.api.security import new_token
from facefleet.server.domain.models import PublishedModel, Rollout, RolloutState, Target
from facefleet.server.state.interface import State
from tests.console.conftest import Consoles, Server


def main(page: Page) -> Locator:
    return page.get_by_role("main")


def state_of(server: Server) -> State:
    return server.harness.server.state  # type: ignore[union-attr]


def stranger(seed: int, device: str, count: int, *, newest_seconds_ago: int = 10) -> list[Event]:
    """`count` sightings of one stranger (a face vector of its own) on `device`, oldest first, ten seconds
    apart, the newest `newest_seconds_ago` before now."""
    rng = np.random.default_rng(seed)
    person = rng.normal(size=128)
    now = utc_now()
    events = []
    for i in range(count):
        vector = (person + rng.normal(scale=0.05, size=128)).astype(np.float32)
        ok, crop = cv2.imencode(".jpg", rng.integers(0, 255, size=(112, 112, 3), dtype=np.uint8))
        assert ok
        snapshot = FaceSnapshot(
            crop.tobytes(), b"", Embedding("sface@2021dec", vector / np.linalg.norm(vector))
        )
        seconds_ago = newest_seconds_ago + 10 * (count - 1 - i)
        events.append(
            Event(
                str(uuid.uuid4()),
                device,
                now - timedelta(seconds=seconds_ago),
                "face",
                "unknown",
                camera="side",
                snapshot=snapshot,
            )
        )
    return events


def cluster_of(page: Page, cluster_id: str) -> Locator:
    return main(page).locator(f'article[data-cluster-id="{cluster_id}"]')


def test_a_cluster_with_hidden_faces_shows_them_all_before_any_action(
    consoles: Consoles, server: Server
) -> None:
    """A cluster of 20 faces shows 18 and a control to show them all; an action pressed while some are
    hidden shows them all instead, and is done only when pressed again."""
    sightings = stranger(31, "door-31", 20)
    state_of(server).add_events(sightings)
    admin = consoles.signed_in(server.harness.admin_token)
    admin.go("Unknown faces")
    page = admin.page
    cluster = cluster_of(page, sightings[0].event_id)
    heading = cluster.get_by_role("heading")
    expect(heading).to_have_text(f"Unknown person {sightings[0].event_id[:8]}: 20 faces")  # not its place
    expect(cluster.get_by_role("img")).to_have_count(18)
    cluster.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(cluster.get_by_role("img")).to_have_count(20)
    expect(cluster.get_by_role("status")).to_contain_text("Dismiss acts on all 20 faces of this cluster")
    cluster.get_by_role("button", name="Dismiss").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status").filter(has_text="Dismissed 20 faces.")).to_be_visible()
    expect(cluster).to_have_count(0)

    more = stranger(32, "door-32", 19)
    state_of(server).add_events(more)
    page.get_by_role("button", name="Refresh").click()
    cluster = cluster_of(page, more[0].event_id)
    expect(cluster.get_by_role("img")).to_have_count(18)
    cluster.get_by_role("button", name="Show all 19 faces").click()
    expect(cluster.get_by_role("img")).to_have_count(19)
    expect(cluster.get_by_role("button", name=re.compile("^Show"))).to_have_count(0)
    cluster.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status").filter(has_text="Deleted 19 faces.")).to_be_visible()


def test_a_cluster_that_changed_is_shown_again_where_it_was(consoles: Consoles, server: Server) -> None:
    """Two clusters, the newer first. A face joins the older one while it is on screen, making it the newest:
    its dismissal is refused (409), and it is shown again as it is now in the same place, with a note; the
    other keeps its label. Dismissed again, it goes."""
    older = stranger(41, "door-41", 2, newest_seconds_ago=40)
    newer = stranger(42, "door-42", 2, newest_seconds_ago=20)
    state_of(server).add_events([*older, *newer])
    admin = consoles.signed_in(server.harness.admin_token)
    admin.go("Unknown faces")
    page = admin.page
    articles = main(page).locator("article.cluster")
    moved, stays = cluster_of(page, older[0].event_id), cluster_of(page, newer[0].event_id)
    expect(moved.get_by_role("heading")).to_have_text(re.compile(r": 2 faces$"))
    ids = [a.get_attribute("data-cluster-id") for a in articles.all()]
    assert ids.index(newer[0].event_id) < ids.index(older[0].event_id), ids

    joined = stranger(41, "door-41", 3, newest_seconds_ago=5)[-1]  # the same stranger, just now
    state_of(server).add_events([joined])
    with admin.expecting(r"status of 409"):
        moved.get_by_role("button", name="Dismiss").click()
        page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
        expect(moved.get_by_role("status")).to_contain_text(
            "Faces joined or left this cluster since it was shown"
        )
    expect(moved.get_by_role("heading")).to_have_text(f"Unknown person {older[0].event_id[:8]}: 3 faces")
    expect(moved.get_by_role("img")).to_have_count(3)
    expect(moved.get_by_role("heading")).to_be_focused()
    after = [a.get_attribute("data-cluster-id") for a in articles.all()]
    assert after == ids, (ids, after)  # where the operator was, although it is now the newest
    expect(stays.get_by_role("heading")).to_have_text(f"Unknown person {newer[0].event_id[:8]}: 2 faces")
    moved.get_by_role("button", name="Dismiss").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status").filter(has_text="Dismissed 3 faces.")).to_be_visible()


def test_a_cluster_whose_oldest_face_left_is_found_under_its_new_id(
    consoles: Consoles, server: Server
) -> None:
    """The oldest face of a cluster on screen is deleted elsewhere, so the cluster's id changes: the action
    on the old id (404) shows the cluster under its new id, where it was, with a note; acted on again, it
    goes."""
    sightings = stranger(51, "door-51", 3)
    state_of(server).add_events(sightings)
    admin = consoles.signed_in(server.harness.admin_token)
    admin.go("Unknown faces")
    page = admin.page
    expect(cluster_of(page, sightings[0].event_id).get_by_role("img")).to_have_count(3)
    index = [a.get_attribute("data-cluster-id") for a in main(page).locator("article.cluster").all()].index(
        sightings[0].event_id
    )
    gone = server.api.post("/api/snapshots/delete", json={"snapshot_ids": [sightings[0].event_id]})
    assert gone.status_code == 200, gone.text
    with admin.expecting(r"status of 404"):
        cluster_of(page, sightings[0].event_id).get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
        cluster = cluster_of(page, sightings[1].event_id)
        expect(cluster.get_by_role("status")).to_contain_text("The oldest face of this cluster left it")
    expect(cluster.get_by_role("heading")).to_have_text(
        f"Unknown person {sightings[1].event_id[:8]}: 2 faces"
    )
    expect(cluster.get_by_role("img")).to_have_count(2)
    ids = [a.get_attribute("data-cluster-id") for a in main(page).locator("article.cluster").all()]
    assert ids.index(sightings[1].event_id) == index, ids
    cluster.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status").filter(has_text="Deleted 2 faces.")).to_be_visible()


def test_a_server_that_stops_answering_is_shown_and_refreshing_goes_on(
    consoles: Consoles, server: Server
) -> None:
    """The server takes every API call and never answers (as when it is stopped): the Fleet page's refresh
    fails after 15 s with a message, the page says it has not been updated for a while, and the next refresh
    is still made. The page's clock is Playwright's, moved forward by the test."""
    admin = consoles.new()
    page = admin.page
    page.clock.install()
    admin.open()
    admin.sign_in(server.harness.admin_token)
    admin.go("Fleet")
    expect(main(page).get_by_text(re.compile(r"^\d+ agents?, "))).to_be_visible()
    held: list[Route] = []
    page.route("**/api/**", lambda route: held.append(route))  # taken, never answered
    with page.expect_request("**/api/fleet"):
        page.clock.fast_forward(6_000)  # the 5 s refresh
    stale = page.locator("#stale")
    expect(stale).to_be_hidden()
    with page.expect_request("**/api/fleet"):  # the next refresh, at once: a hung call does not stop them
        page.clock.fast_forward(16_000)
    expect(main(page).get_by_role("alert")).to_contain_text(
        "The fleet cannot be refreshed: The server did not answer within 15 s"
    )
    page.clock.fast_forward(1_000)
    expect(stale).to_be_visible()
    expect(stale).to_contain_text(re.compile(r"Not updated for \d+ s"))
    # a status region whose spoken part stays the same while the seconds count goes on
    expect(page.get_by_role("status").filter(has_text="The server has not answered since")).to_be_visible()
    said = stale.locator("span:not([aria-hidden])").inner_text()
    counted = stale.locator("span[aria-hidden=true]").inner_text()
    page.clock.fast_forward(2_000)
    expect(stale.locator("span[aria-hidden=true]")).not_to_have_text(counted)
    assert stale.locator("span:not([aria-hidden])").inner_text() == said
    page.unroute("**/api/**")
    with page.expect_response("**/api/fleet"):  # the second held call times out, the next is answered
        page.clock.fast_forward(16_000)
    expect(stale).to_be_hidden()
    expect(main(page).get_by_role("alert")).to_have_count(0)


def face_events(device: str, count: int, *, newest_seconds_ago: float) -> list[Event]:
    """`count` unknown-face events on `device`, a second apart, the newest `newest_seconds_ago` before now."""
    now = utc_now()
    return [
        Event(
            str(uuid.uuid4()),
            device,
            now - timedelta(seconds=newest_seconds_ago + count - 1 - i),
            "face",
            "unknown",
            camera="hall",
        )
        for i in range(count)
    ]


def test_the_live_events_table_keeps_one_page_and_says_when_it_cannot_update(
    consoles: Consoles, server: Server
) -> None:
    """Activity with new events arriving: the first page stays at 50 rows, the oldest going, and "Older"
    then starts right after its last row; a live update that cannot reach the server says so in the table's
    status line, and the next one that can clears it. The page's clock is moved on by the test."""
    first = face_events("live-4", 45, newest_seconds_ago=120)
    state_of(server).add_events(first)
    admin = consoles.new()
    page = admin.page
    page.clock.install()
    admin.open("/console/#/activity?device=live-4")
    admin.sign_in(server.harness.admin_token)
    table = main(page).get_by_role("table").filter(has=page.get_by_role("columnheader", name="Score"))
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(45)

    later = face_events("live-4", 20, newest_seconds_ago=60)
    state_of(server).add_events(later)
    with page.expect_response("**/api/events?*"):
        page.clock.fast_forward(5_000)
    expect(rows.first).to_have_attribute("data-event-id", later[-1].event_id)
    expect(rows).to_have_count(50)
    newest_first = [e.event_id for e in reversed(first + later)]
    assert [r.get_attribute("data-event-id") for r in rows.all()] == newest_first[:50]
    status = main(page).get_by_role("status").filter(has_text="new events arrived")
    expect(status).to_contain_text("20 new events arrived; 50 events shown")

    page.route("**/api/events?*", lambda route: route.abort())
    with admin.expecting(r"Failed to load resource"):
        page.clock.fast_forward(5_000)
        expect(main(page).get_by_role("alert")).to_contain_text(
            "New events cannot be fetched: The server cannot be reached"
        )
    page.unroute("**/api/events?*")
    page.clock.fast_forward(5_000)
    expect(main(page).get_by_role("alert")).to_have_count(0)
    expect(rows).to_have_count(50)

    main(page).get_by_role("button", name="Older").click()
    expect(rows).to_have_count(15)
    assert [r.get_attribute("data-event-id") for r in rows.all()] == newest_first[50:]


def test_the_doors_range_ends_now_at_every_refresh(consoles: Consoles, server: Server) -> None:
    """Doors on "Last hour", left open for two hours (the page's clock moved on by the test): a decision
    that was within the last hour when the page opened leaves both the summary and the table."""
    opened_at = utc_now() - timedelta(hours=2)
    decision = Event(
        str(uuid.uuid4()),
        "door-6",
        opened_at - timedelta(minutes=30),
        "access",
        "denied",
        door="gate-6",
        reason="not in an allowed group",
    )
    state_of(server).add_events([decision])
    admin = consoles.new()
    page = admin.page
    page.clock.install(time=opened_at)
    admin.open("/console/#/doors?range=1h&door=gate-6")
    admin.sign_in(server.harness.admin_token)
    expect(page.get_by_label("Range")).to_have_value("1h")
    summary = main(page).locator('tr[data-door="gate-6"]')
    event = main(page).locator(f'tr[data-event-id="{decision.event_id}"]')
    expect(summary).to_have_count(1)
    expect(event).to_have_count(1)
    with page.expect_response("**/api/events/access?*"):
        page.clock.fast_forward(2 * 3600 * 1000)
    expect(summary).to_have_count(0)
    expect(event).to_have_count(0)
    expect(main(page).get_by_text("No access events in this range")).to_be_visible()


FETCH_COUNTER = """
window.__fetched = [];
const fetchFirst = window.fetch;
window.fetch = (input, init) => { window.__fetched.push(String(input)); return fetchFirst(input, init); };
"""


def rollout_of_a_stored_model(server: Server, model_id: str, state: RolloutState) -> Rollout:
    """A rollout in the server's state of a model recorded as published (its files are never fetched: no
    agent is connected)."""
    models = state_of(server).models
    now = utc_now()
    models.add_model(
        PublishedModel(model_id, "expression", "FP32", "MIT", (ModelFile("model.xml", 1, "0" * 64),), "", now)
    )
    return models.add_rollout(model_id, Target("all"), state, now)


def test_the_rollouts_list_refreshes_in_one_call_only_while_one_may_change_and_keeps_the_focus(
    consoles: Consoles, server: Server
) -> None:
    """The Rollouts list refreshes every 10 s with one call (each rollout's agents per state come with
    it), keeps the keyboard on the action button it was on, and once every rollout is finished refreshes
    once a minute only, so that a rollout started elsewhere still appears. The page's clock is moved on
    by the test; its fetch calls are counted."""
    done = rollout_of_a_stored_model(server, "mini-test@done", "rolled_back")
    running = rollout_of_a_stored_model(server, "mini-test@running", "active")
    admin = consoles.new()
    page = admin.page
    admin.context.add_init_script(FETCH_COUNTER)
    page.clock.install()
    admin.open("/console/#/rollouts")
    admin.sign_in(server.harness.admin_token)
    pause = page.get_by_role("button", name=f"Pause rollout {running.rollout_id}", exact=True)
    expect(pause).to_be_visible()
    expect(main(page).locator(f'tr[data-rollout-id="{done.rollout_id}"]')).to_contain_text("rolled back")

    def calls() -> list[str]:
        return [u for u in page.evaluate("window.__fetched") if "/api/rollouts" in u]

    pause.focus()
    before = len(calls())
    row = f'tr[data-rollout-id="{running.rollout_id}"]'
    page.locator(row).evaluate("(row) => { row.dataset.drawn = 'before'; }")
    with page.expect_response("**/api/rollouts"):
        page.clock.fast_forward(10_000)
    expect(page.locator(f"{row}:not([data-drawn])")).to_have_count(1)  # the row drawn again
    expect(pause).to_be_focused()  # not the rollout's link, which Enter would follow
    assert calls()[before:] == ["/api/rollouts"]
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Pause rollout {running.rollout_id}?")
    dialog.get_by_role("button", name="Cancel").click()

    rolled = server.api.post(f"/api/rollouts/{running.rollout_id}/rollback")
    assert rolled.status_code == 200, rolled.text
    with page.expect_response("**/api/rollouts"):
        page.clock.fast_forward(10_000)
    expect(pause).to_have_count(0)
    settled = len(calls())
    later = rollout_of_a_stored_model(server, "mini-test@later", "active")  # started elsewhere
    for _ in range(5):
        page.clock.fast_forward(10_000)
    assert len(calls()) == settled, calls()  # nothing left that may change: read once a minute only
    with page.expect_response("**/api/rollouts"):
        page.clock.fast_forward(10_000)
    expect(main(page).locator(f'tr[data-rollout-id="{later.rollout_id}"]')).to_contain_text("active")


def test_a_session_that_ends_with_a_dialog_open_leaves_only_the_sign_in_form(
    consoles: Consoles, server: Server
) -> None:
    """The session ends (signed out elsewhere) while the operator fills in a dialog: submitting it leaves the
    sign-in form alone, saying so in plain words, with no dialog over it; signing in again puts the focus on
    the page's heading."""
    sightings = stranger(61, "door-61", 2)
    state_of(server).add_events(sightings)
    admin = consoles.signed_in(server.harness.admin_token)
    page = admin.page
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    admin.go("Unknown faces")
    cluster = cluster_of(page, sightings[0].event_id)
    cluster.get_by_role("button", name="Enrol as new person").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill("Visitor")
    ended = page.request.delete(server.url + "/api/session", headers={"X-CSRF-Token": admin.csrf()})
    assert ended.status == 204, ended.text()
    with admin.expecting(r"status of 401"):
        dialog.get_by_role("button", name="Enrol", exact=True).click()
        expect(page.get_by_label("Token")).to_be_visible()
    expect(page.locator("dialog")).to_have_count(0)
    expect(main(page)).to_contain_text("Your session has ended; sign in again.")
    expect(page.locator("body")).not_to_contain_text("Authorization")
    admin.sign_in(server.harness.admin_token)
    expect(page.get_by_role("heading", level=1)).to_be_focused()


def test_long_unbroken_names_wrap_and_keep_the_actions_on_screen(consoles: Consoles, server: Server) -> None:
    """A person whose name is 150 letters without a space: the People table and the Activity table keep
    within the page's width, the People row's actions on screen."""
    name = "Ж" * 150
    state_of(server).add_person(Person("long-name", display_name=name), [], utc_now())
    seen = Event(str(uuid.uuid4()), "door-7", utc_now(), "face", "match", person_id="long-name")
    state_of(server).add_events([seen])
    admin = consoles.signed_in(server.harness.admin_token)
    page = admin.page

    def fits(table: Locator) -> None:
        wrap = table.locator("xpath=ancestor::div[contains(@class, 'table-wrap')][1]")
        widths = wrap.evaluate("(w) => [w.scrollWidth, w.clientWidth]")
        assert widths[0] <= widths[1], f"the table is {widths[0]} px wide in {widths[1]} px"

    admin.go("People")
    main(page).get_by_label("Search").fill("жжж")
    row = main(page).get_by_role("row").filter(has_text="long-name")
    expect(row).to_have_count(1)
    fits(main(page).get_by_role("table"))
    delete = row.get_by_role("button", name=re.compile("^Delete"))
    box = delete.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280, box

    admin.page.goto(server.url + "/console/#/activity?device=door-7")
    table = main(page).get_by_role("table").filter(has=page.get_by_role("columnheader", name="Score"))
    expect(table.locator(f'tr[data-event-id="{seen.event_id}"]')).to_contain_text(name)
    fits(table)


def test_the_next_people_page_asked_for_while_a_search_is_typed_is_the_listed_ones(
    consoles: Consoles, server: Server
) -> None:
    """Next clicked within the search's pause after typing: the page tokens were issued for the listing on
    screen, so Next continues that listing (no refused token), and the search then starts again from its
    first page. The page's clock is Playwright's, held while the search waits."""
    for n in range(30):
        state_of(server).add_person(Person(f"pager-{n:02d}", display_name=f"Pager {n:02d}"), [], utc_now())
    token, record = new_token("pager", "admin", utc_now())  # its own: the module's admin token signs in often
    state_of(server).add_token(record)
    admin = consoles.new()
    page = admin.page
    page.clock.install()
    admin.open()
    admin.sign_in(token)
    admin.go("People")
    pages = main(page).get_by_role("group", name="People pages")
    expect(pages.get_by_text("Page 1")).to_be_visible()
    page.clock.pause_at(int(page.evaluate("Date.now()")) + 1_000)
    main(page).get_by_label("Search").fill("nobody-by-this-name")
    with page.expect_response("**/api/people?*") as answered:
        pages.get_by_role("button", name="Next").click()
    assert answered.value.status == 200, answered.value.text()
    expect(pages.get_by_text("Page 2")).to_be_visible()
    expect(main(page).get_by_role("alert")).to_have_count(0)
    page.clock.run_for(300)  # the search's pause ends
    expect(main(page).get_by_text("Nobody matches the search.")).to_be_visible()
    expect(main(page).get_by_role("alert")).to_have_count(0)
