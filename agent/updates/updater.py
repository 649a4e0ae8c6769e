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
`facefleet-server models quantize --in-place`) is stored next to the float model the agent runs, which stays
active under its id with its gallery: the precisions of that model are measured again with the variant among
the candidates (facefleet.vision.precision), and the analyzer that runs the winner is switched in as above.
The variant is refused when this agent runs another model for the task, does not measure precisions
("auto"), or its accuracy guard fails on this agent's faces. A later release of the float model itself (a
rollback) withdraws the delivered variants and measures again.

Any failure leaves the previous version running and is recorded with its reason (in updates.json next to
the store, so a restart does not retry a refused version and still reports why) and reported to the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from facefleet.agent.recognition.matching import LoadedGalleries
from facefleet.agent.updates.download import DiskFullError, download
from facefleet.agent.updates.smoke import smoke_test
from facefleet.agent.updates.statuses import load_statuses, save_statuses
from facefleet.core.errors import FaceFleetError
from facefleet.link.checks import MAX_REASON_CHARS
from facefleet.link.errors import LinkError
from facefleet.link.models import Activation, ModelAssignment, ModelRelease, ModelStatus
from facefleet.vision.errors import ModelIntegrityError, ModelSpecError, ModelStoreError
from facefleet.vision.models.manifest import MANIFEST_NAME, ModelManifest, sha256_file
from facefleet.vision.models.quantize import PRECISION as INT8
from facefleet.vision.models.quantize import int8_variants
from facefleet.vision.models.store import ModelStore, StoredModel, check_model
from facefleet.vision.models.tasks import check_fits
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.precision.choice import Choice

log = logging.getLogger(__name__)


class SupersededError(Exception):
    """A newer assignment names another version for the task: this one is abandoned, nothing recorded."""


class GalleryTimeoutError(ModelStoreError):
    """The gallery of a new embedding model did not arrive in time."""


class RetryLaterError(FaceFleetError):
    """Some releases were refused for a reason that may pass; reconcile again after a backoff."""


TRANSIENT_ERRORS = (DiskFullError, GalleryTimeoutError)
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

    release: ModelRelease
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
        running = _running_models(self.analyzer())
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
                reason = _reason(exc) + ("; retrying later" if transient else "")
                log.error("model %s (%s) refused: %s; keeping the running version", release.model_id,
                          release.task, reason)  # fmt: skip
                await self._record(client, timeout, release, "failed", reason, final=not transient)
                if transient:
                    retry.append(release.model_id)
        await asyncio.to_thread(self._forget_downloads, {f.sha256 for r in pending for f in r.files})
        if retry:
            raise RetryLaterError(f"model {', '.join(retry)} to be tried again")

    def _applied(self, release: ModelRelease) -> bool:
        """Whether the agent runs what release asks: its model, without delivered variants it no longer
        wants; for a variant to run in a float model's place, that float model with the variant stored and
        reported active."""
        running = self.versions().get(release.task)
        try:
            place = self._in_place_of(release)
        except FaceFleetError:
            return False  # an unreadable release: _apply says why
        if place is None:
            return running == release.model_id and not self._delivered_variants(release.task, running)
        last = self._statuses.get(release.task)
        return (
            running == place
            and self._stored(release) is not None
            and last is not None
            and (last.model_id, last.rollout_id, last.state)
            == (release.model_id, release.rollout_id, "active")
        )

    def _in_place_of(self, release: ModelRelease) -> str | None:
        """The float model a release's variant runs in the place of (None: a model of its own)."""
        if release.manifest_json:
            return _release_manifest(release).runs_in_place_of
        stored = self._stored(release)
        return stored.manifest.runs_in_place_of if stored is not None else None

    def _stored(self, release: ModelRelease) -> StoredModel | None:
        name, version = release.name_version
        try:
            return self.store.get(release.task, name, version)
        except ModelStoreError:
            return None

    def _delivered_variants(self, task: str, model_id: str | None) -> list[StoredModel]:
        """The variants a rollout delivered to run in model_id's place (not those built on this agent)."""
        if model_id is None:
            return []
        return [m for m in self.store.versions(task) if m.manifest.runs_in_place_of == model_id]

    def _forget_downloads(self, keep: set[str]) -> None:
        """Remove partial downloads of versions no longer assigned (a rollback during a download)."""
        for part in (self.store.root / ".downloads").glob("*.part"):
            if part.stem not in keep:
                part.unlink(missing_ok=True)

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
        stored = self._stored_copy(release)
        if stored is None:
            await self._record(client, timeout, release, "downloading", f"{len(release.files)} files")
            stored = await self._download(release, client)
        self._still_wanted(release)
        await self._record(client, timeout, release, "verifying", "compiling and running a smoke inference")
        try:
            analyzer = await asyncio.to_thread(self._verify, stored)
        except FaceFleetError:
            await asyncio.to_thread(self._discard, stored)  # a refused version takes no place in the store
            raise
        previous = self.versions().get(release.task)
        if release.task == "embedding":
            try:
                await self._gallery_for(release)
                await self._hand_over(release, stored, analyzer)
            except BaseException:
                if self.gallery is not None and previous:
                    self.gallery.watch_models((previous,))  # back to the running model's gallery alone
                raise
            if self.gallery is not None:
                self.gallery.watch_models((release.model_id,))  # the previous model's gallery is not needed
        else:
            await self._hand_over(release, stored, analyzer)
        log.info("model %s (%s): active", release.model_id, release.task)
        await self._record(client, timeout, release, "active", "running")
        try:
            await asyncio.to_thread(self.prune, release.task, previous)
        except (FaceFleetError, OSError) as exc:  # the version runs; only the clean-up failed
            log.warning("old %s versions not removed: %s", release.task, _reason(exc))

    async def _apply_variant(
        self, release: ModelRelease, place: str, client: ModelClient, timeout: float
    ) -> None:
        """Store the variant next to the float model `place`, measure that model again with it among the
        candidates, and switch to the analyzer that runs the winner."""
        log.info(
            "model %s (%s): assigned by rollout %d to run in %s's place",
            release.model_id,
            release.task,
            release.rollout_id,
            place,
        )
        running = self.versions().get(release.task)
        if running != place:
            raise ModelSpecError(
                f"model {release.model_id} is an INT8 variant to run in {place}'s place, and this agent runs "
                f"{running or 'no model'} for {release.task}; roll out {place} first"
            )
        stored = self._stored_copy(release)
        if stored is None:
            await self._record(client, timeout, release, "downloading", f"{len(release.files)} files")
            stored = await self._download(release, client)
        self._still_wanted(release)
        await self._record(
            client, timeout, release, "verifying", f"measuring it against {place} on this device"
        )
        try:
            analyzer, choice = await asyncio.to_thread(self._measure_variant, stored)
        except FaceFleetError:
            await asyncio.to_thread(self._discard, stored)
            raise
        await self._hand_over(release, _running_model(analyzer, release.task), analyzer)
        if choice.variant == release.model_id:
            outcome = f"runs in {place}'s place: {choice.reason}"
        else:
            outcome = f"stored; {place} runs at {choice.label}: {choice.reason}"
        log.info("model %s (%s): %s", release.model_id, release.task, outcome)
        await self._record(client, timeout, release, "active", outcome)

    def _measure_variant(self, variant: StoredModel) -> tuple[FaceAnalyzer, Choice]:
        """An analyzer whose float model of variant's task was measured again with variant stored (a
        measurement in the agent's child process), smoke-tested, and what that model now runs at.
        ModelSpecError when the variant cannot take part or its guard refuses it."""
        check_model(variant)
        task, model_id = variant.manifest.task, variant.manifest.model_id
        analyzer = self.analyzer()
        float_model = _running_model(analyzer, task)
        plan = analyzer.precisions
        setting = plan.measured_setting(task) if plan is not None else "f32"
        if plan is None or setting is not None:
            raise ModelSpecError(
                f"model {model_id} runs in its float model's place only where precisions are measured "
                f'([runtime] inference_precision = "auto"); this agent runs {task} at {setting}'
            )
        if model_id not in {v.manifest.model_id for v in int8_variants(self.store, float_model)}:
            raise ModelSpecError(
                f"model {model_id} was not quantized from this agent's {float_model.manifest.model_id} "
                "(another source file)"
            )
        renewed = plan.renewed()
        candidate = analyzer.with_model(float_model, renewed)
        choice = renewed.choice(float_model)
        measured = next((m for m in choice.measurements if m.variant == model_id), None)
        if measured is None:
            raise ModelSpecError(f"model {model_id} was not measured on this device: {choice.reason}")
        if not measured.guard.passed:
            raise ModelSpecError(
                f"model {model_id} is refused by the accuracy guard on this agent's faces: "
                f"{measured.guard.summary}"
            )
        smoke_test(candidate, task, self.settings.smoke_photo)
        return candidate, choice

    async def _withdraw_variants(self, release: ModelRelease, client: ModelClient, timeout: float) -> None:
        """The float model runs and is asked for again (a variant's rollout rolled back): remove the
        variants delivered for it, measure it again without them, and switch to what wins."""
        doomed = self._delivered_variants(release.task, release.model_id)
        names = ", ".join(m.manifest.model_id for m in doomed)
        log.info("model %s (%s): withdrawing INT8 variant %s", release.model_id, release.task, names)
        await self._record(client, timeout, release, "verifying", f"withdrawing INT8 variant {names}")

        def withdraw() -> FaceAnalyzer | None:
            for model in doomed:
                self.store.remove(model)
            analyzer = self.analyzer()
            plan = analyzer.precisions
            if plan is None or plan.measured_setting(release.task) is not None:
                return None  # a variant never ran here: nothing to switch
            float_model = _running_model(analyzer, release.task)
            candidate = analyzer.with_model(float_model, plan.renewed())
            smoke_test(candidate, release.task, self.settings.smoke_photo)
            return candidate

        candidate = await asyncio.to_thread(withdraw)
        if candidate is not None:
            await self._hand_over(release, _running_model(candidate, release.task), candidate)
        runs_at = self.precisions().get(release.task, "f32")
        await self._record(client, timeout, release, "active", f"running at {runs_at}; {names} withdrawn")

    async def _hand_over(self, release: ModelRelease, stored: StoredModel, analyzer: FaceAnalyzer) -> None:
        """Give the verified analyzer to the frame loop and wait until it runs (a last chance to abandon)."""
        self._still_wanted(release)
        switch = Switch(release, stored, analyzer, concurrent.futures.Future())
        await asyncio.to_thread(self.switch, switch)  # the service may prepare the gallery here
        await asyncio.wrap_future(switch.done)

    def _discard(self, model: StoredModel) -> None:
        if (
            self.store.active_map().get(model.manifest.task)
            != f"{model.manifest.name}/{model.manifest.version}"
        ):
            self.store.remove(model)

    def _stored_copy(self, release: ModelRelease) -> StoredModel | None:
        """The stored version when its files are the release's, when the release brings none, or when it is
        this agent's own conversion of the same source model at the same precision (OpenVINO versions
        write different IR bytes for the same model, e.g. for the defaults both sides import)."""
        stored = self._stored(release)
        if stored is None:
            if not release.files:
                raise ModelStoreError(
                    f"model {release.model_id} is not stored on this agent and the server sent no files; "
                    "publish it on the server and roll it out again"
                )
            return None
        wanted = {f.name: f.sha256 for f in release.files}
        if release.files and stored.manifest.files != wanted:
            theirs = _release_manifest(release)
            ours = stored.manifest
            own_conversion = (ours.source.sha256, ours.precision) == (theirs.source.sha256, theirs.precision)
            if own_conversion and ours.precision != INT8:  # an INT8 model is its calibration's, not the IR's
                log.info("model %s: using this agent's own conversion of the same source", release.model_id)
                return stored
            raise ModelIntegrityError(
                f"model {release.model_id} is stored on this agent with other files than the release; "
                "publish the new files under another version"
            )
        return stored

    async def _download(self, release: ModelRelease, client: ModelClient) -> StoredModel:
        manifest = _release_manifest(release)
        downloads = self.store.root / ".downloads"
        timeout = self.settings.download_timeout_s
        files = {}
        for spec in release.files:

            def fetch(file: str, offset: int) -> AsyncIterator[bytes]:
                return client.download(release.model_id, file, offset, timeout)

            files[spec.name] = await download(fetch, spec, downloads)
            self._still_wanted(release)
        return await asyncio.to_thread(self._install, manifest, files)

    def _install(self, manifest: ModelManifest, files: dict[str, Path]) -> StoredModel:
        """Move verified downloads (file name → path) into the store as one version, atomically."""
        staged = self.store.staging_dir()
        try:
            for name, path in files.items():
                shutil.move(path, staged / name)
                if sha256_file(staged / name) != manifest.files[name]:
                    raise ModelIntegrityError(f"{name}: changed while it was installed")
            return self.store.add(staged, manifest)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    f"disk full while installing model {manifest.model_id} in {self.store.root}; free "
                    "space or lower [models] keep_versions"
                ) from None
            raise
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _verify(self, model: StoredModel) -> FaceAnalyzer:
        """Files, task fit, compilation and a smoke inference; the analyzer that runs the model."""
        check_model(model)
        task = model.manifest.task
        analyzer = self.analyzer()
        device = analyzer.runtime.settings.device
        try:
            io = analyzer.runtime.describe(model.xml_path)
        except Exception as exc:
            raise ModelSpecError(f"model {model.manifest.model_id} cannot be read: {_reason(exc)}") from None
        check_fits(task, io, f"model {model.manifest.model_id}")
        try:
            candidate = analyzer.with_model(model)
        except FaceFleetError:
            raise
        except Exception as exc:
            raise ModelSpecError(
                f"model {model.manifest.model_id} does not compile on {device}: {_reason(exc)}"
            ) from None
        smoke_test(candidate, task, self.settings.smoke_photo)
        return candidate

    async def _gallery_for(self, release: ModelRelease) -> None:
        """Wait until the applied gallery holds the new embedding model's embeddings (both are watched)."""
        model_id = release.model_id
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

    def prune(self, task: str, protect: str | None = None) -> list[str]:
        """Remove the oldest stored versions of task beyond keep_versions, never the active one nor
        `protect` (the version that ran before the switch: the rollback target); the model ids removed.
        An INT8 variant of a stored model (extra.quantized_from) is not a version of its own: it goes
        with its float model."""
        versions = self.store.versions(task)
        active = self.store.active_map().get(task)
        stored = {m.manifest.model_id for m in versions}

        def kept(m: StoredModel) -> bool:
            return f"{m.manifest.name}/{m.manifest.version}" == active or m.manifest.model_id == protect

        variants = [m for m in versions if m.manifest.extra.get("quantized_from") in stored and not kept(m)]
        counted = [m for m in versions if m not in variants]
        surplus = len(counted) - max(2, self.settings.keep_versions)
        removed = []
        for model in [m for m in counted if not kept(m)][: max(0, surplus)]:
            model_id = model.manifest.model_id
            own = [v for v in variants if v.manifest.extra["quantized_from"] == model_id]
            for doomed in [model, *own]:
                self.store.remove(doomed)
                removed.append(doomed.manifest.model_id)
                log.info("model %s (%s) removed (keep_versions)", doomed.manifest.model_id, task)
        return removed

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
            log.warning("model status not reported (%s); it is sent again later", _reason(exc))
            return False
        self.unreported = False
        return True


def _running_models(analyzer: FaceAnalyzer) -> dict[str, StoredModel | None]:
    """task → the model analyzer runs for it (the tasks a rollout may change)."""
    return {
        "detection": analyzer.detector_model,
        "embedding": analyzer.embedding_model,
        "expression": analyzer.expression_model,
    }


def _running_model(analyzer: FaceAnalyzer, task: str) -> StoredModel:
    model = _running_models(analyzer).get(task)
    if model is None:
        raise ModelSpecError(f"this agent runs no {task} model")
    return model


def _release_manifest(release: ModelRelease) -> ModelManifest:
    """The release's manifest, checked to describe exactly this release."""
    try:
        manifest = ModelManifest.from_json(json.loads(release.manifest_json))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelIntegrityError(
            f"model {release.model_id}: unreadable manifest in the release ({exc})"
        ) from None
    files = {f.name: f.sha256 for f in release.files}
    if (manifest.task, manifest.model_id) != (release.task, release.model_id) or manifest.files != files:
        raise ModelIntegrityError(
            f"model {release.model_id}: the release's manifest describes {manifest.task} model "
            f"{manifest.model_id} with other files; the server's catalogue is inconsistent"
        )
    if MANIFEST_NAME in files:
        raise ModelIntegrityError(f"model {release.model_id}: the release lists its manifest as a file")
    return manifest


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
