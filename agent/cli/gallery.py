"""`facefleet-agent enroll | people | identify | verify | store check | migrate | backup | restore |
calibrate`: the on-device gallery. Only `store migrate` (and the service, at start) upgrades the store: the
other verbs create a new one (enroll) but refuse one older than themselves, untouched (exit 65)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress
from rich.table import Table

from facefleet.agent.cli.context import Context
from facefleet.agent.cli.vision import make_analyzer
from facefleet.agent.config import write_threshold
from facefleet.agent.domain.records import DuplicatePersonError, Embedding, Person, StoreError
from facefleet.agent.recognition.calibration import calibrate
from facefleet.agent.recognition.face_choice import choose_face
from facefleet.agent.recognition.matching import Matcher
from facefleet.agent.store.backup import backup_store, restore_store
from facefleet.agent.store.connection import damage_fix
from facefleet.agent.store.database import EmbeddingStore
from facefleet.agent.store.lock import StoreLock
from facefleet.core.cli import add_command
from facefleet.core.errors import EXIT_DATA, EXIT_IO, EXIT_OK, ConfigError
from facefleet.vision.errors import ImageError
from facefleet.vision.images import image_files, list_images, read_image
from facefleet.vision.pipeline import FaceAnalyzer
from facefleet.vision.quality import QualityPolicy

# Two unit embeddings this close come from the same image: a second copy adds no sample, only weight.
DUPLICATE_COSINE = 0.9999


def register(commands: Any) -> None:
    enrol = add_command(
        commands,
        "enroll",
        "enrol a person from photos (each must hold one good face)",
        "facefleet-agent enroll --person-id ada --name 'Ada L.' --group staff photos/ada/",
    )
    enrol.add_argument("--person-id", required=True, help="stable id, e.g. an employee number")
    enrol.add_argument("--name", default="", help="display name")
    enrol.add_argument("--group", action="append", default=[], help="a group, e.g. a door group (repeatable)")
    enrol.add_argument("--largest-face", action="store_true", help="use the largest face of a group photo")
    enrol.add_argument("--add", action="store_true", help="add samples to a person who is already enrolled")
    enrol.add_argument("images", nargs="+", type=Path, help="image files or folders")
    enrol.set_defaults(handler=_enrol)

    people = add_command(
        commands,
        "people",
        "list, show or delete enrolled people",
        "facefleet-agent people list --json",
        json_output=False,
    )
    verbs = people.add_subparsers(dest="people_command", metavar="VERB", required=True)
    add_command(verbs, "list", "list enrolled people", "facefleet-agent people list").set_defaults(
        handler=_people_list
    )
    show = add_command(
        verbs, "show", "show one person and their embeddings", "facefleet-agent people show ada"
    )
    show.add_argument("person_id")
    show.set_defaults(handler=_people_show)
    delete = add_command(
        verbs, "delete", "delete a person and all their embeddings", "facefleet-agent people delete ada"
    )
    delete.add_argument("person_id")
    delete.set_defaults(handler=_people_delete)

    identify = add_command(
        commands, "identify", "say who is in a photo (1:N)", "facefleet-agent identify door.jpg"
    )
    identify.add_argument("image", type=Path)
    identify.set_defaults(handler=_identify)

    verify = add_command(
        commands,
        "verify",
        "check a claimed identity against a photo (1:1)",
        "facefleet-agent verify --claim ada door.jpg   (a rejected claim still exits 0)",
    )
    verify.add_argument("--claim", required=True, help="the claimed person id")
    verify.add_argument("image", type=Path)
    verify.set_defaults(handler=_verify)

    store = add_command(
        commands,
        "store",
        "check, upgrade, back up or restore the on-device store",
        "facefleet-agent store check   (exit 74 when the file is damaged)",
        description="Maintenance of the on-device store (<state_dir>/agent.db).",
        json_output=False,
    )
    store_verbs = store.add_subparsers(dest="store_command", metavar="VERB", required=True)
    check = add_command(
        store_verbs, "check", "run SQLite's integrity and foreign-key checks", "facefleet-agent store check"
    )
    check.set_defaults(handler=_store_check)
    migrate = add_command(
        store_verbs,
        "migrate",
        "apply the store's pending schema migrations (the agent service stopped)",
        "facefleet-agent store migrate   (refused, exit 69, while the agent service runs)",
        description="Upgrade <state_dir>/agent.db to this agent's schema, as the service does at start. "
        "Refused while the service runs on it (restart the service instead, which upgrades it).",
    )
    migrate.set_defaults(handler=_store_migrate)
    backup = add_command(
        store_verbs,
        "backup",
        "copy the store into a new directory (safe while the agent service runs)",
        "facefleet-agent store backup /var/backups/facefleet-agent/2026-12-02",
        description="Copy <state_dir>/agent.db with SQLite's online backup API (consistent while the service "
        "writes; commits still in agent.db-wal included) into DEST/agent.db (mode 0600), checked with "
        "SQLite's integrity check, and write DEST/backup.json (time, schema version, row counts, sha256). "
        "DEST must not exist or be empty (exit 65 otherwise); a damaged store is not backed up (exit 74). "
        "Do not `cp agent.db` of a running agent: the copy misses what is still in agent.db-wal.",
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="a new or empty directory")
    backup.set_defaults(handler=_store_backup)
    restore = add_command(
        store_verbs,
        "restore",
        "put a backup in place of the store (the agent service stopped)",
        "facefleet-agent store restore /var/backups/facefleet-agent/2026-12-02",
        description="Check the backup written by `store backup` (sha256 against backup.json, SQLite's "
        "integrity check, a schema no newer than this agent: exit 65 otherwise), then, holding the store's "
        "lock, move agent.db, agent.db-wal and agent.db-shm aside as agent.db.before-restore-<time>(-wal, "
        "-shm) and put the backup's agent.db in their place. Refused (exit 69) while the service runs: "
        "systemctl stop facefleet-agent first, start it after (it upgrades an older backup at start). An "
        "agent connected to a fleet server then syncs its gallery from the server as usual.",
    )
    restore.add_argument("src", type=Path, metavar="SRC", help="a directory written by `store backup`")
    restore.set_defaults(handler=_store_restore)

    calibrate_parser = add_command(
        commands,
        "calibrate",
        "choose a threshold from a folder with one sub-folder of photos per person",
        "facefleet-agent --config agent.toml calibrate people/ --target-far 0.001 --write-config",
    )
    calibrate_parser.add_argument("folder", type=Path)
    calibrate_parser.add_argument(
        "--target-far", type=float, default=0.001, help="false-accept rate to allow"
    )
    calibrate_parser.add_argument(
        "--write-config", action="store_true", help="save the threshold in --config"
    )
    calibrate_parser.set_defaults(handler=_calibrate)


def store_path(context: Context) -> Path:
    return context.store_path


def _open_store(
    context: Context, read_only: bool = False, *, existing: bool = False, upgrade: bool = False
) -> EmbeddingStore:
    """The store; existing: the verb only reads or removes, so a store that is not there is an error (a
    mistyped --state-dir), not an empty store made there. A store older than this agent is refused
    (StoreOutdatedError) unless upgrade (`store migrate`): the service on it may run the older code."""
    path = store_path(context)
    if existing:
        _require_store(path)
    return EmbeddingStore(path, read_only=read_only, upgrade=upgrade)


def _require_store(path: Path) -> None:
    """StoreError (exit 74) when there is no store at path: a verb that only reads, removes or upgrades
    makes none (a mistyped --state-dir)."""
    if not path.exists():
        raise StoreError(
            f"no store at {path}: nobody was enrolled with this state directory; check --state-dir or "
            "state_dir in --config"
        )


def _enrol(context: Context, args: argparse.Namespace) -> int:
    paths = image_files(args.images)
    analyzer = make_analyzer(context)
    model_id = analyzer.embedding_model_id
    assert model_id is not None
    policy = context.config.quality.policy()
    with _open_store(context) as store:
        exists = args.person_id in {p.person_id for p in store.gallery.people()}
        if exists and not args.add:  # before the photos are analysed; checked again as they are stored
            raise _already_enrolled(args.person_id)
        stored = store.gallery.embeddings(args.person_id, model_id) if exists else []
        accepted: list[Embedding] = []
        rejected: list[dict[str, str]] = []
        with Progress(console=context.errors, transient=True, disable=context.json_output) as progress:
            task = progress.add_task("enrolling", total=len(paths))
            for path in paths:
                sample = _sample(analyzer, path, model_id, policy, args.largest_face)
                if isinstance(sample, str):
                    rejected.append({"image": str(path), "reason": sample})
                elif (twin := _twin(sample, stored)) is not None:
                    reason = f"already enrolled: identical to a stored sample ({twin.source or 'no source'})"
                    rejected.append({"image": str(path), "reason": reason})
                elif (twin := _twin(sample, accepted)) is not None:
                    reason = f"identical to {twin.source.removeprefix('enrol:')}, enrolled in this run"
                    rejected.append({"image": str(path), "reason": reason})
                else:
                    accepted.append(sample)
                progress.advance(task)
        revision = None
        if accepted:
            person = Person(args.person_id, args.name, tuple(dict.fromkeys(args.group)))
            try:  # one write transaction: of two enrolments of a new id at once, one is refused here
                revision, _ = store.gallery.enrol(person, accepted, add=args.add)
            except DuplicatePersonError:
                raise _already_enrolled(args.person_id) from None
    report = {
        "person_id": args.person_id,
        "enrolled": len(accepted),
        "rejected": rejected,
        "model_id": model_id,
        "gallery_revision": revision,
    }
    if context.json_output:
        context.print_json(report)
    else:
        context.console.print(
            f"{args.person_id}: {len(accepted)} sample(s) enrolled with {model_id}", markup=False
        )
        for item in rejected:
            context.console.print(f"  rejected {item['image']}: {item['reason']}", markup=False)
    return EXIT_OK if accepted else EXIT_DATA


def _already_enrolled(person_id: str) -> DuplicatePersonError:
    return DuplicatePersonError(
        f"person id {person_id!r} is already enrolled; use --add for more samples, or another id"
    )


def _sample(
    analyzer: FaceAnalyzer, path: Path, model_id: str, policy: QualityPolicy, largest_face: bool
) -> Embedding | str:
    """The enrolment sample of one image, or why the image cannot give one."""
    try:
        choice = choose_face(analyzer.analyze(read_image(path)), policy, largest_face)
    except ImageError as exc:
        return str(exc)
    if choice.face is None or choice.embedding is None:
        return choice.reason or "unusable"
    return Embedding(model_id, choice.embedding, min(1.0, choice.face.quality.score), f"enrol:{path.name}")


def _twin(sample: Embedding, others: list[Embedding]) -> Embedding | None:
    """The sample of the same model that `sample` only repeats (cosine ≥ DUPLICATE_COSINE), if any."""
    for other in others:
        if other.model_id == sample.model_id and float(other.vector @ sample.vector) >= DUPLICATE_COSINE:
            return other
    return None


def _people_list(context: Context, args: argparse.Namespace) -> int:
    with _open_store(context, read_only=True, existing=True) as store:
        people = store.gallery.people()
        counts = {p.person_id: len(store.gallery.embeddings(p.person_id)) for p in people}
        revision = store.gallery.revision()
    rows: list[dict[str, Any]] = [
        {
            "person_id": p.person_id,
            "name": p.name,
            "groups": list(p.groups),
            "embeddings": counts[p.person_id],
        }
        for p in people
    ]
    if context.json_output:
        context.print_json({"gallery_revision": revision, "people": rows})
        return EXIT_OK
    table = Table("person id", "name", "groups", "embeddings", title=f"gallery revision {revision}")
    for row in rows:
        table.add_row(row["person_id"], row["name"], ", ".join(row["groups"]), str(row["embeddings"]))
    context.console.print(table)
    return EXIT_OK


def _people_show(context: Context, args: argparse.Namespace) -> int:
    with _open_store(context, read_only=True, existing=True) as store:
        person = store.gallery.person(args.person_id)
        embeddings = store.gallery.embeddings(args.person_id)
    data = {
        "person_id": person.person_id,
        "name": person.name,
        "groups": list(person.groups),
        "metadata": dict(person.metadata),
        "embeddings": [
            {
                "model_id": e.model_id,
                "dim": e.dim,
                "quality": e.quality,
                "source": e.source,
                "created_at": e.created_at,
            }
            for e in embeddings
        ],
    }
    if context.json_output:
        context.print_json(data)
    else:
        context.console.print(json.dumps(data, indent=2), markup=False)
    return EXIT_OK


def _people_delete(context: Context, args: argparse.Namespace) -> int:
    with _open_store(context, existing=True) as store:
        revision = store.gallery.delete_person(args.person_id)
    if context.json_output:
        context.print_json({"deleted": args.person_id, "gallery_revision": revision})
    else:
        context.console.print(f"deleted {args.person_id} (gallery revision {revision})", markup=False)
    return EXIT_OK


def _matcher(context: Context, analyzer: FaceAnalyzer) -> tuple[Matcher, str]:
    model_id = analyzer.embedding_model_id
    assert model_id is not None
    matcher = Matcher(context.config.matching.policy())
    with _open_store(context, read_only=True, existing=True) as store:
        matcher.refresh(store.gallery, [model_id])
    return matcher, model_id


def _identify(context: Context, args: argparse.Namespace) -> int:
    image = read_image(args.image)
    analyzer = make_analyzer(context)
    matcher, model_id = _matcher(context, analyzer)
    scoring = context.config.matching.scoring
    faces = analyzer.analyze(image)
    results: list[dict[str, Any]] = []
    for face in faces:
        assert face.embedding is not None
        decision = matcher.identify(face.embedding, model_id, quality=face.quality.score, scoring=scoring)
        results.append({"box_xyxy": face.to_json()["box_xyxy"], "decision": decision.to_json()})
    if context.json_output:
        context.print_json({"image": str(args.image), "faces": results})
        return EXIT_OK
    if not results:
        context.console.print(f"{args.image}: no face found", markup=False)
    for result in results:
        verdict = result["decision"]
        who = verdict["person_id"] or verdict["status"]
        context.console.print(f"{result['box_xyxy']}: {who} — {verdict['reason']}", markup=False)
    return EXIT_OK


def _verify(context: Context, args: argparse.Namespace) -> int:
    image = read_image(args.image)
    analyzer = make_analyzer(context)
    matcher, model_id = _matcher(context, analyzer)
    choice = choose_face(analyzer.analyze(image), context.config.quality.policy(), largest=True)
    face = choice.face
    if face is None or face.embedding is None:
        raise ImageError(f"{args.image}: {choice.reason}")
    decision = matcher.verify(
        face.embedding,
        model_id,
        args.claim,
        quality=face.quality.score,
        scoring=context.config.matching.scoring,
    )
    if context.json_output:
        context.print_json(
            {
                "image": str(args.image),
                "claim": args.claim,
                "accepted": decision.accepted,
                "decision": decision.to_json(),
            }
        )
    else:
        verdict = "ACCEPTED" if decision.accepted else "REJECTED"
        context.console.print(f"claim {args.claim!r}: {verdict} — {decision.reason}", markup=False)
    return EXIT_OK


def _store_check(context: Context, args: argparse.Namespace) -> int:
    """What SQLite's checks find, table by table where a damaged page stops them, and the fix; a file SQLite
    cannot open at all (its first page, or the schema's, damaged) is the StoreCorruptError of the open."""
    path = store_path(context)
    with _open_store(context, read_only=True, existing=True) as store:
        problems = store.integrity_check()
    fix = damage_fix(path) if problems else None
    if context.json_output:
        context.print_json({"store": str(path), "ok": not problems, "problems": problems, "fix": fix})
    else:
        context.console.print(f"{path}: {'ok' if not problems else 'DAMAGED'}", markup=False)
        for problem in problems:
            context.console.print(f"  {problem}", markup=False)
        if fix:
            context.console.print(fix, markup=False)
    return EXIT_OK if not problems else EXIT_IO


def _calibrate(context: Context, args: argparse.Namespace) -> int:
    if args.write_config and context.config_path is None:
        raise ConfigError("--write-config needs --config FILE to know which file to write")
    if not args.folder.is_dir():
        raise ImageError(
            f"{args.folder}: not a folder; give a folder with one sub-folder of photos per person"
        )
    analyzer = make_analyzer(context)
    model_id = analyzer.embedding_model_id
    assert model_id is not None
    samples: dict[str, np.ndarray] = {}
    skipped = []
    for person_dir in sorted(p for p in args.folder.iterdir() if p.is_dir()):
        vectors = []
        for path in list_images(person_dir):
            try:
                choice = choose_face(
                    analyzer.analyze(read_image(path)), context.config.quality.policy(), largest=True
                )
            except ImageError as exc:
                skipped.append({"image": str(path), "reason": str(exc)})
                continue
            if choice.embedding is None:
                skipped.append({"image": str(path), "reason": choice.reason or "unusable"})
                continue
            vectors.append(choice.embedding)
        if vectors:
            samples[person_dir.name] = np.stack(vectors)
    if len(samples) < 2 or not any(len(v) >= 2 for v in samples.values()):
        raise ImageError(
            f"{args.folder}: calibration needs at least two people and someone with two or more usable photos"
        )
    results = calibrate(samples, args.target_far)
    best = min(results.values(), key=lambda c: c.frr)
    chosen = results[context.config.matching.scoring]
    report = {
        "model_id": model_id,
        "people": len(samples),
        "samples": int(sum(len(v) for v in samples.values())),
        "target_far": args.target_far,
        "threshold": round(chosen.threshold, 4),
        "far": chosen.far,
        "frr": chosen.frr,
        "margin": round(chosen.margin, 4),
        "by_scoring": {
            scoring: {
                "threshold": round(c.threshold, 4),
                "far": c.far,
                "frr": c.frr,
                "margin": round(c.margin, 4),
                "impostor_max": round(c.impostor_max, 4),
                "genuine_min": round(c.genuine_min, 4),
                "genuine": c.genuine_count,
                "impostor": c.impostor_count,
            }
            for scoring, c in results.items()
        },
        "separates_better": next(s for s, c in results.items() if c is best),
        "configured_scoring": context.config.matching.scoring,
        "skipped": skipped,
    }
    if args.write_config:
        assert context.config_path is not None
        write_threshold(context.config_path, model_id, chosen.threshold)
        report["written_to"] = str(context.config_path)
    if context.json_output:
        context.print_json(report)
    else:
        context.console.print(
            f"{model_id}: threshold {chosen.threshold:.4f} for FAR ≤ {args.target_far:g} "
            f"({context.config.matching.scoring} scoring) → FAR {chosen.far:.3%}, FRR {chosen.frr:.3%}, "
            f"margin {chosen.margin:+.4f} over the highest impostor score {chosen.impostor_max:.4f} "
            f"on {report['people']} people, {report['samples']} photos",
            markup=False,
        )
        for scoring, figures in report["by_scoring"].items():
            context.console.print(f"  {scoring}: {figures}", markup=False)
        if args.write_config:
            context.console.print(f"written to {context.config_path}", markup=False)
    return EXIT_OK


def _store_migrate(context: Context, args: argparse.Namespace) -> int:
    path = store_path(context)
    _require_store(path)  # before the lock file is made beside it
    with (
        StoreLock(path, "`facefleet-agent store migrate`"),
        _open_store(context, existing=True, upgrade=True) as store,
    ):
        applied, version = store.upgraded, store.schema_version()
    if context.json_output:
        context.print_json({"store": str(path), "schema_version": version, "applied": applied})
    elif applied:
        context.console.print(f"{path}: applied {', '.join(applied)}; now at schema {version}", markup=False)
    else:
        context.console.print(f"{path}: at schema {version} already; nothing to do", markup=False)
    return EXIT_OK


def _store_backup(context: Context, args: argparse.Namespace) -> int:
    path = store_path(context)
    manifest = backup_store(path, args.dest, datetime.now(timezone.utc))
    if context.json_output:
        context.print_json({"store": str(path), "backup": str(args.dest), **manifest.to_json()})
        return EXIT_OK
    counts = ", ".join(f"{table} {n}" for table, n in manifest.row_counts.items())
    context.console.print(
        f"backed up {path} (schema {manifest.schema_version}; {counts}) to {args.dest}", markup=False
    )
    return EXIT_OK


def _store_restore(context: Context, args: argparse.Namespace) -> int:
    path = store_path(context)
    manifest, kept = restore_store(args.src, path, datetime.now(timezone.utc))
    if context.json_output:
        context.print_json(
            {
                "store": str(path),
                "backup": str(args.src),
                "kept": [str(k) for k in kept],
                **manifest.to_json(),
            }
        )
        return EXIT_OK
    for moved in kept:
        context.console.print(f"moved aside: {moved}", markup=False)
    context.console.print(
        f"restored {args.src} (taken {manifest.created_at}, schema {manifest.schema_version}) into {path}; "
        "start the agent service again",
        markup=False,
    )
    return EXIT_OK
