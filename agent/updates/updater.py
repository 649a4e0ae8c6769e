"""Model versions assigned by the fleet server: download, verify, compile, smoke-test, switch, prune.

For each release of an assignment that differs from what the agent runs, `ModelUpdater.reconcile`:

1. gets the files: the stored copy when its sha256 agree, else a resumable download
(facefleet.agent.updates.download)
   checked against the release's size and sha256, then the manifest's own sha256 and identity;
2. verifies it off the frame loop: the model's inputs and outputs fit its task, it compiles on the configured
   device (an analyzer sharing the unchanged models, facefleet.vision.pipeline.FaceAnalyzer.with_model), and a
   smoke inference on a real photo gives sane output (facefleet.agent.updates.smoke);
3. for an embedding model, waits until the gallery holds every person's embeddings of the new model too
   (the sync client watches both models), so that model and gallery switch together;
4. hands the ready analyzer to the service, which, between two frames, activates the version on disk
   (active.json, written atomically) and swaps the analyzer in; frames keep being processed on the previous
   version until that moment;
5. removes stored versions beyond `keep_versions` per task (never the active or the previous one).

A release of an INT8 variant published to run in its float model's place (manifest extra.runs_in_place_of,
`facefleet-server models quantize --in-place`) is stored next to that float model, which stays active under
its id with its gallery (the agent switches to it first when it stores it but runs another version): the
precisions of that model are measured again with the variant among the candidates (facefleet.vision.precision)
and the analyzer that runs the winner is switched in as above. Variants an earlier rollout delivered for it
are removed first, so only the assigned one competes. The variant is refused (before any download where the
manifest tells) when the float model is not stored, the precisions are not measured ("auto"), or it was not
quantized from this agent's float model; after it, when its accuracy guard fails at this agent's thresholds.
A later release of the float model itself (a rollback) withdraws the delivered variants, measures again and
switches; a failure there is retried, never counted as a refusal of the float model.

Any failure leaves the previous version running and is recorded with its reason (in updates.json next to
the store, so a restart does not retry a refused version and still reports why) and reported to the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from facefleet.agent.domain.records import StoreFullError
from facefleet.agent.recognition.matching import LoadedGalleries
from facefleet.agent.updates.candidates import (
    measured_setting,
    reason,
    remeasured,
    running_model,
    running_models,
    with_variant,
    with_version,
)
from facefleet.agent.updates.download import DISK_FULL_ERRNOS, DiskFullError, download
from facefleet.agent.updates.statuses import load_statuses, save_statuses
from facefleet.agent.updates.versions import StoredVersions, release_manifest
from facefleet.core.errors import FaceFleetError
from facefleet.link.checks import MAX_REASON_CHARS
from facefleet.link.errors import LinkError
from facefleet.link.models import Activation, ModelAssignment, ModelRelease, ModelStatus
from facefleet.vision.errors import ModelSpecError, ModelStoreError
from facefleet.vision.models.manifest import ModelManifest
from facefleet.vision.models.quantize import is_variant_of
from facefleet.vision.models.store import ModelStore, StoredModel
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.precision.choice import Choice

log = logging.getLogger(__name__)


class SupersededError(Exception):
    """A newer assignment names another version for the task: this one is abandoned, nothing recorded."""


class GalleryTimeoutError(ModelStoreError):
    """The gallery of a new embedding model did not arrive in time."""


class RetryLaterError(FaceFleetError):
    """Some releases were refused for a reason that may pass; reconcile again after a backoff."""


class WithdrawError(ModelStoreError):
    """Withdrawing a delivered variant failed; the float model it ran in the place of is not refused."""


TRANSIENT_ERRORS = (DiskFullError, GalleryTimeoutError, WithdrawError)
"""Refusals worth another try later: the disk may be cleaned up, the server may come back."""

ANALYZER_TASKS = ("detection", "embedding", "expression")


@dataclass(frozen=True)
class UpdateSettings:
    """keep_versions: stored versions kept per task (≥ 2: the running one and the one before);
    gallery_timeout_s: longest wait for the new embedding model's gallery; download_timeout_s: deadline of
    one file's download call; smoke_photo: the photo of the smoke inference (default: the bundled one)."""

    keep_versions: int = 3
    gallery_timeout_s: float = 300.0
    download_timeout_s: float = 600.0
    smoke_photo: Path | None = None


class ModelClient(Protocol):
    """The server calls the updater needs (facefleet.agent.fleet.client.FleetClient)."""

    def download(self, model_id: str, file: str, offset: int, timeout: float) -> AsyncIterator[bytes]: ...

    async def report_models(
        self,
        statuses: Sequence[ModelStatus],
        versions: Mapping[str, str],
        precisions: Mapping[str, str],
        timeout: float,
    ) -> None: ...


class GalleryLink(Protocol):
    """What an embedding switch needs of the sync client: watch these embedding models, and whether the
    applied gallery holds a model's embeddings."""

    def watch_models(self, models: tuple[str, ...]) -> None: ...

    def gallery_has(self, model_id: str) -> bool: ...


@dataclass
class Switch:
    """A verified analyzer waiting for the service to swap it in; done completes once it runs (or fails).
    galleries: for an embedding model, its galleries loaded by whoever takes the switch, off the frames."""

    release: ModelRelease | None
    """None: the running model measured again, no release."""
    model: StoredModel
    analyzer: FaceAnalyzer
    done: concurrent.futures.Future[None]
    galleries: LoadedGalleries | None = None


class ModelUpdater:
    """Applies the server's model assignments to one agent. analyzer(): the analyzer running now;
    switch(s): hand a verified analyzer to whoever runs the frames (it completes s.done)."""

    def __init__(
        self,
        store: ModelStore,
        analyzer: Callable[[], FaceAnalyzer],
        switch: Callable[[Switch], None],
        settings: UpdateSettings | None = None,
    ) -> None:
        self.store = store
        self.stored = StoredVersions(store)
        self.analyzer = analyzer
        self.switch = switch
        self.settings = settings or UpdateSettings()
        self.gallery: GalleryLink | None = None
        self.latest: ModelAssignment | None = None
        self.unreported = False
        self._statuses = load_statuses(store)
        store.clean_staging()

    # ---- state --------------------------------------------------------------------------------------

    def statuses(self) -> list[ModelStatus]:
        """The latest status of each task's assigned version, for Register and ReportModelStatus."""
        return [self._statuses[task] for task in sorted(self._statuses)]

    def versions(self) -> dict[str, str]:
        """task → model id running now."""
        running = running_models(self.analyzer())
        return {task: m.manifest.model_id for task, m in running.items() if m is not None}

    def precisions(self) -> dict[str, str]:
        """task → what its running model runs at on the device ('bf16', 'int8 (<variant id>)', …)."""
        return self.analyzer().runs_at()

    def pending(self, assignment: ModelAssignment) -> list[ModelRelease]:
        """Releases that differ from what runs and were not refused before."""
        todo = []
        for release in assignment.releases:
            if self._applied(release):
                continue
            last = self._statuses.get(release.task)
            refused = (
                last is not None
                and last.state == "failed"
                and last.final
                and (last.model_id, last.rollout_id) == (release.model_id, release.rollout_id)
            )
            if not refused:
                todo.append(release)
        return todo

    def _applied(self, release: ModelRelease) -> bool:
        """Whether the agent runs what release asks: its model, with no variant a rollout delivered for it
        (stored, or still running after its files went); for a variant to run in a float model's place, that
        float model with the variant stored and reported active."""
        task = release.task
        running = self.versions().get(task)
        try:
            place = self._in_place_of(release)
            if place is None:
                variant = self._running_variant(task)
                return (
                    running == release.model_id
                    and not self.stored.delivered_variants(task, running)
                    and (variant is None or self.stored.by_id(task, variant) is not None)
                )
            last = self._statuses.get(task)
            return (
                running == place
                and self.stored.stored(release) is not None
                and last is not None
                and (last.model_id, last.rollout_id, last.state)
                == (release.model_id, release.rollout_id, "active")
                and measured_setting(self.analyzer(), task) is None
            )
        except FaceFleetError:  # an unreadable release or store: the running model is what it names
            return running == release.model_id

    def _in_place_of(self, release: ModelRelease) -> str | None:
        """The float model a release's variant runs in the place of (None: a model of its own)."""
        manifest = self._manifest(release)
        return manifest.runs_in_place_of if manifest is not None else None

    def _manifest(self, release: ModelRelease) -> ModelManifest | None:
        """The release's manifest, or the stored copy's when it brings no files (None: neither)."""
        if release.manifest_json:
            return release_manifest(release)
        stored = self.stored.stored(release)
        return stored.manifest if stored is not None else None

    def _running_variant(self, task: str) -> str | None:
        """The INT8 variant the running analyzer compiled in its float model's place, if any."""
        analyzer = self.analyzer()
        model = running_models(analyzer).get(task)
        if analyzer.precisions is None or model is None:
            return None
        return analyzer.precisions.choice(model).variant

    # ---- the work -----------------------------------------------------------------------------------

    def assign(self, assignment: ModelAssignment) -> None:
        """A newer assignment arrived: a release it no longer names is abandoned at the next step."""
        self.latest = assignment

    async def reconcile(self, assignment: ModelAssignment, client: ModelClient, timeout: float) -> None:
        """Bring the running models to the assignment, one release at a time.

        Connection problems (grpc errors, ConnectionError) propagate: call again once reconnected, downloads
        resume. A refusal that may pass (a full disk, a gallery that did not arrive, a rollback) is reported
        and then raised as RetryLaterError: call again after a backoff. A release a newer assignment no
        longer names is abandoned quietly (the caller then reconciles the newer one)."""
        self.latest = assignment
        for release in assignment.releases:
            if self._applied(release):
                await self._settle_active(release, client, timeout)
        pending = self.pending(assignment)
        retry = []
        for release in pending:
            try:
                if release.task not in ANALYZER_TASKS:
                    raise ModelSpecError(f"this agent runs no {release.task} model")
                place = self._in_place_of(release)
                if place is not None:
                    await self._apply_variant(release, place, client, timeout)
                elif self.versions().get(release.task) == release.model_id:
                    await self._withdraw_variants(release, client, timeout)
                else:
                    await self._apply(release, client, timeout)
            except SupersededError as exc:
                log.info("%s", exc)
                return
            except (FaceFleetError, OSError, RuntimeError, ValueError) as exc:
                if isinstance(exc, (ConnectionError, LinkError)):
                    raise  # the connection broke: retried once reconnected, the download resumes
                transient = isinstance(exc, TRANSIENT_ERRORS) or release.rollout_id == 0
                why = reason(exc) + ("; retrying later" if transient else "")
                log.error("model %s (%s) refused: %s; keeping the running version", release.model_id,
                          release.task, why)  # fmt: skip
                await self._record(client, timeout, release, "failed", why, final=not transient)
                if transient:
                    retry.append(release.model_id)
        keep = {f.sha256 for r in pending for f in r.files}
        await asyncio.to_thread(self.stored.forget_downloads, keep)
        if pending:  # versions may have gone: their compiled blobs go too
            await asyncio.to_thread(self.analyzer().runtime.sweep_compiled_cache)
        if retry:
            raise RetryLaterError(f"model {', '.join(retry)} to be tried again")

    def _still_wanted(self, release: ModelRelease) -> None:
        """SupersededError when the newest assignment names another version (or none) for the task."""
        latest = self.latest.by_task().get(release.task) if self.latest is not None else None
        if latest is None or (latest.model_id, latest.rollout_id) != (release.model_id, release.rollout_id):
            raise SupersededError(
                f"model {release.model_id} ({release.task}): abandoned, a newer assignment replaces it"
            )

    async def _settle_active(self, release: ModelRelease, client: ModelClient, timeout: float) -> None:
        last = self._statuses.get(release.task)
        if last is None or (last.model_id, last.rollout_id, last.state) != (
            release.model_id,
            release.rollout_id,
            "active",
        ):
            await self._record(client, timeout, release, "active", "running")

    async def _apply(self, release: ModelRelease, client: ModelClient, timeout: float) -> None:
        log.info("model %s (%s): assigned by rollout %d", release.model_id, release.task, release.rollout_id)
        stored = self.stored.copy_for(release)
        if stored is None:
            await self._record(client, timeout, release, "downloading", f"{len(release.files)} files")
            stored = await self._download(release, client)
        self._still_wanted(release)
        await self._record(client, timeout, release, "verifying", "compiling and running a smoke inference")
        try:
            analyzer = await asyncio.to_thread(
                with_version, self.analyzer(), stored, self.settings.smoke_photo
            )
        except FaceFleetError:
            await asyncio.to_thread(self.stored.discard, stored)  # a refused version takes no place
            raise
        previous = await self._switch_to(release, stored, analyzer)
        log.info("model %s (%s): active", release.model_id, release.task)
        await self._record(client, timeout, release, "active", "running")
        try:
            await asyncio.to_thread(self.stored.prune, release.task, self.settings.keep_versions, previous)
        except (FaceFleetError, OSError) as exc:  # the version runs; only the clean-up failed
            log.warning("old %s versions not removed: %s", release.task, reason(exc))

    async def _switch_to(
        self, release: ModelRelease, stored: StoredModel, analyzer: FaceAnalyzer
    ) -> str | None:
        """Hand the verified analyzer that runs stored over, an embedding model's gallery first when it is
        another model than the running one; the model id it replaced."""
        previous = self.versions().get(release.task)
        model_id = stored.manifest.model_id
        if release.task != "embedding" or model_id == previous:
            await self._hand_over(release, stored, analyzer)
            return previous
        try:
            await self._gallery_for(release, model_id)
            await self._hand_over(release, stored, analyzer)
        except BaseException:
            if self.gallery is not None and previous:
                self.gallery.watch_models((previous,))  # back to the running model's gallery alone
            raise
        if self.gallery is not None:
            self.gallery.watch_models((model_id,))  # the previous model's gallery is not needed
        return previous

    async def _apply_variant(
        self, release: ModelRelease, place: str, client: ModelClient, timeout: float
    ) -> None:
        """Store the variant next to the float model `place`, measure that model again with this variant
        among the candidates (not the variants delivered before), and switch to the analyzer that runs the
        winner (and to the float model, with its gallery, when another version runs); then remove the
        variants delivered before. A refused variant leaves the store; one whose switch is to be retried
        (a gallery that did not arrive) stays for the next try."""
        task = release.task
        log.info("model %s (%s): assigned by rollout %d to run in %s's place", release.model_id, task,
                 release.rollout_id, place)  # fmt: skip
        try:
            float_model = self._in_place_target(release, place)
        except FaceFleetError:
            kept = self.stored.stored(release)  # delivered before, now refused here: not a candidate
            if kept is not None:
                await asyncio.to_thread(self.stored.discard, kept)
            raise
        stored = self.stored.copy_for(release)
        if stored is None:
            await self._record(client, timeout, release, "downloading", f"{len(release.files)} files")
            stored = await self._download(release, client)
        self._still_wanted(release)
        older = [
            m for m in self.stored.delivered_variants(task, place) if m.manifest.model_id != release.model_id
        ]
        excluded = frozenset(m.manifest.model_id for m in older)
        smoke = self.settings.smoke_photo
        try:
            await self._record(client, timeout, release, "verifying", f"measuring it against {place}")
            analyzer, choice = await asyncio.to_thread(
                with_variant, self.analyzer(), float_model, stored, excluded, smoke
            )
            previous = await self._switch_to(release, float_model, analyzer)
        except BaseException as exc:
            if not isinstance(exc, TRANSIENT_ERRORS):
                await asyncio.to_thread(self.stored.discard, stored)  # refused or abandoned
            raise
        try:
            for model in older:
                await asyncio.to_thread(self.store.remove, model)
                log.info("model %s (%s): replaced by %s", model.manifest.model_id, task, release.model_id)
            if previous != place:
                await asyncio.to_thread(self.stored.prune, task, self.settings.keep_versions, previous)
        except (FaceFleetError, OSError) as exc:  # the variant runs; only the clean-up failed
            log.warning("old %s versions not removed: %s", task, reason(exc))
        if choice.variant == release.model_id:
            outcome = f"runs in {place}'s place: {choice.reason}"
        else:
            outcome = f"stored; {place} runs at {choice.label}: {choice.reason}"
        log.info("model %s (%s): %s", release.model_id, task, outcome)
        await self._record(client, timeout, release, "active", outcome)

    def _in_place_target(self, release: ModelRelease, place: str) -> StoredModel:
        """The stored float model a variant release is to run in the place of; ModelSpecError when it
        cannot (no such model here, precisions not measured, quantized from another source)."""
        task, model_id = release.task, release.model_id
        setting = measured_setting(self.analyzer(), task)
        if setting is not None:
            raise ModelSpecError(
                f"model {model_id} runs in its float model's place only where precisions are measured "
                f'([runtime] inference_precision = "auto"); this agent runs {task} at {setting}'
            )
        float_model = self.stored.by_id(task, place)
        if float_model is None:
            running = self.versions().get(task) or "no model"
            raise ModelSpecError(
                f"model {model_id} is an INT8 variant to run in {place}'s place, and this agent runs "
                f"{running} for {task} and does not store {place}; roll out {place} first"
            )
        manifest = self._manifest(release)
        if manifest is None or not is_variant_of(manifest, float_model.manifest):
            raise ModelSpecError(
                f"model {model_id} was not quantized from this agent's {place} (another source file)"
            )
        return float_model

    async def _withdraw_variants(self, release: ModelRelease, client: ModelClient, timeout: float) -> None:
        """The float model runs and is asked for again (a variant's rollout rolled back): remove the
        variants delivered for it, measure it again without them, and switch to what wins. A failure is
        WithdrawError (retried; the float model is not refused)."""
        task = release.task
        doomed = self.stored.delivered_variants(task, release.model_id)
        names = ", ".join(m.manifest.model_id for m in doomed) or self._running_variant(task) or "none"
        log.info("model %s (%s): withdrawing INT8 variant %s", release.model_id, task, names)

        def withdraw() -> FaceAnalyzer | None:
            for model in doomed:
                self.store.remove(model)
            analyzer = self.analyzer()
            if measured_setting(analyzer, task) is not None:
                return None  # no variant ran here: nothing to switch
            return remeasured(analyzer, task, self.settings.smoke_photo)[0]

        try:
            candidate = await asyncio.to_thread(withdraw)
            if candidate is not None:
                await self._hand_over(release, running_model(candidate, task), candidate)
        except (SupersededError, ConnectionError, LinkError):
            raise
        except Exception as exc:
            raise WithdrawError(f"withdrawing INT8 variant {names} failed: {reason(exc)}") from None
        runs_at = self.precisions().get(task, "f32")
        await self._record(client, timeout, release, "active", f"running at {runs_at}; {names} withdrawn")

    async def guard_changed(self, task: str) -> bool:
        """The thresholds the accuracy guard checks changed (the server's cluster threshold): when the
        running model of task runs at a measured precision whose choice was not guarded at them, measure it
        again, and switch to what wins when it is not what runs. True when it was measured again; a
        failure is logged and the running choice stays (until the next start measures it)."""
        analyzer = self.analyzer()
        try:
            running = await asyncio.to_thread(self._guarded_choice, analyzer, task)
            if running is None:
                return False
            candidate, choice = await asyncio.to_thread(remeasured, analyzer, task, self.settings.smoke_photo)
            if not choice.runs_same_as(running):
                switch = Switch(None, running_model(candidate, task), candidate, concurrent.futures.Future())
                await asyncio.to_thread(self.switch, switch)
                await asyncio.wrap_future(switch.done)
                self.unreported = True  # what it runs at goes to the server with the statuses
        except Exception as exc:
            log.error("%s model not measured again at the new thresholds: %s", task, reason(exc))
            return False
        log.info("%s model %s measured again at the new thresholds: %s (was %s); %s", task,
                 choice.model_id, choice.label, running.label, choice.reason)  # fmt: skip
        return True

    @staticmethod
    def _guarded_choice(analyzer: FaceAnalyzer, task: str) -> Choice | None:
        """The choice analyzer runs task's model at, when the model is to be measured again now (at the
        thresholds the guard checks now); None: no such model, or nothing to measure."""
        model = running_models(analyzer).get(task)
        plan = analyzer.precisions
        if model is None or plan is None or not plan.needs_measuring(model):
            return None
        return plan.choice(model)

    async def _hand_over(self, release: ModelRelease, stored: StoredModel, analyzer: FaceAnalyzer) -> None:
        """Give the verified analyzer to the frame loop and wait until it runs (a last chance to abandon)."""
        self._still_wanted(release)
        switch = Switch(release, stored, analyzer, concurrent.futures.Future())
        try:
            await asyncio.to_thread(self.switch, switch)  # the service may prepare the gallery here
            await asyncio.wrap_future(switch.done)
        except (OSError, StoreFullError) as exc:
            if isinstance(exc, StoreFullError) or exc.errno in DISK_FULL_ERRNOS:  # worth another try later
                raise DiskFullError(
                    f"disk full while switching to model {stored.manifest.model_id} ({reason(exc)}); free "
                    "space or lower [models] keep_versions"
                ) from None
            raise

    async def _download(self, release: ModelRelease, client: ModelClient) -> StoredModel:
        manifest = release_manifest(release)
        downloads = self.store.root / ".downloads"
        timeout = self.settings.download_timeout_s
        files = {}
        for spec in release.files:

            def fetch(file: str, offset: int) -> AsyncIterator[bytes]:
                return client.download(release.model_id, file, offset, timeout)

            files[spec.name] = await download(fetch, spec, downloads)
            self._still_wanted(release)
        return await asyncio.to_thread(self.stored.install, manifest, files)

    async def _gallery_for(self, release: ModelRelease, model_id: str) -> None:
        """Wait until the applied gallery holds embedding model model_id's embeddings (the running model's
        and it are watched)."""
        gallery = self.gallery
        if gallery is None:
            raise ModelStoreError(
                f"embedding model {model_id} needs the server's gallery for it, and this agent has no "
                "[server] sync"
            )
        running = self.versions().get("embedding")
        gallery.watch_models(tuple(m for m in (running, model_id) if m))
        deadline = time.monotonic() + self.settings.gallery_timeout_s
        while not gallery.gallery_has(model_id):
            self._still_wanted(release)
            if time.monotonic() > deadline:
                raise GalleryTimeoutError(
                    f"the gallery of embedding model {model_id} did not arrive within "
                    f"{self.settings.gallery_timeout_s:.0f} s"
                )
            await asyncio.sleep(0.1)

    # ---- statuses -----------------------------------------------------------------------------------

    async def _record(
        self,
        client: ModelClient,
        timeout: float,
        release: ModelRelease,
        state: Activation,
        reason: str,
        *,
        final: bool = True,
    ) -> None:
        status = ModelStatus(
            release.task,
            release.model_id,
            release.rollout_id,
            state,
            reason[:MAX_REASON_CHARS],
            datetime.now(timezone.utc),
            final,
        )
        self._statuses[release.task] = status
        await asyncio.to_thread(save_statuses, self.store, dict(self._statuses))
        self.unreported = True
        await self.report(client, timeout)

    async def report(self, client: ModelClient, timeout: float) -> bool:
        """Send the statuses, the running versions and what they run at; True once the server has them. A
        failure is logged and leaves `unreported` set, for a retry (and the next Register carries them
        anyway)."""
        try:
            await client.report_models(self.statuses(), self.versions(), self.precisions(), timeout)
        except Exception as exc:
            log.warning("model status not reported (%s); it is sent again later", reason(exc))
            return False
        self.unreported = False
        return True
