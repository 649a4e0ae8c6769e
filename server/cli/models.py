"""`facefleet-server models …` and `facefleet-server rollout …`: the model catalogue and rollouts, on the
state directory directly (no running server needed; a running one picks changes up within fleet.poll_seconds).
Publishing, retiring and every rollout change are recorded in the admin audit log as made by "local".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.progress import Progress
from rich.text import Text

from facefleet.core.errors import EXIT_OK
from facefleet.server.cli.context import Context, new_table
from facefleet.server.cli.remote_models import RemoteCatalog, RemoteControl
from facefleet.server.domain.models import (
    FAILURE_ACTIONS,
    DeviceRollout,
    MaxFailures,
    PublishedModel,
    Rollout,
    Target,
)
from facefleet.server.errors import InvalidArgumentError, NotFoundError
from facefleet.server.rollouts.catalogue import ModelCatalog
from facefleet.server.rollouts.control import PREPARING_STALE_SECONDS, RolloutControl, StartedRollout
from facefleet.vision.alignment import ALIGNED_SIZE
from facefleet.vision.errors import QuantizationError
from facefleet.vision.images import image_files
from facefleet.vision.models.importer import PRECISIONS
from facefleet.vision.models.quantize import (
    DEFAULT_SAMPLES,
    DEFAULT_THRESHOLD,
    FaceSample,
    describe,
    faces_from_crops,
    faces_from_photos,
    find_model,
    quantize_model,
)
from facefleet.vision.models.store import ModelStore
from facefleet.vision.models.tasks import TASKS
from facefleet.vision.runtime import Runtime


def register(commands: Any, make: Callable[..., Any]) -> None:
    _register_models(commands, make)
    _register_rollouts(commands, make)


def _register_models(commands: Any, make: Callable[..., Any]) -> None:
    group = make(commands, "models", "manage the server's model catalogue", "facefleet-server models list")
    verbs = group.add_subparsers(dest="models_command", metavar="VERB", required=True)
    defaults = make(
        verbs,
        "import-defaults",
        "import the default models from the installed carrier packages (and publish them)",
        "facefleet-server --state-dir /var/lib/facefleet-server models import-defaults",
    )
    defaults.set_defaults(handler=_import_defaults, local_only="models import-defaults", creates_state=True)
    publish = make(
        verbs,
        "publish",
        "convert a model and publish it for rollouts",
        "facefleet-server models publish emotion.tflite --task expression --name mini-xception "
        "--version fer2013-fp32 --precision FP32",
        "Convert an ONNX/TFLite/IR model (a file, or a directory with model.xml + model.bin or one model "
        "file) to OpenVINO IR in the server's model store, check it fits its task, and record its files "
        "and sha256 in the catalogue.",
    )
    publish.add_argument("path", help="model file or directory")
    publish.add_argument("--task", choices=TASKS, required=True)
    publish.add_argument("--name", required=True, help="model name, e.g. mini-xception")
    publish.add_argument("--version", required=True, help="version label, e.g. fer2013-fp32")
    publish.add_argument("--precision", choices=PRECISIONS, default="FP16", help="IR weight precision")
    publish.add_argument("--licence", default="unknown", help="licence of the model, e.g. MIT")
    publish.set_defaults(handler=_publish, creates_state=True)
    listing = make(verbs, "list", "list published models", "facefleet-server models list --json")
    listing.set_defaults(handler=_list_models)
    show = make(
        verbs, "show", "one published model with its files", "facefleet-server models show sface@2021dec"
    )
    show.add_argument("model_id", metavar="MODEL_ID", help="name@version")
    show.set_defaults(handler=_show_model)
    retire = make(
        verbs,
        "retire",
        "stop offering a model (no new rollout, no download)",
        "facefleet-server models retire mini-xception@fer2013-fp32",
    )
    retire.add_argument("model_id", metavar="MODEL_ID", help="name@version")
    retire.set_defaults(handler=_retire_model)
    quantize = make(
        verbs,
        "quantize",
        "INT8-quantize an embedding model into a new published version, behind an accuracy guard",
        "facefleet-server models quantize sface@2021dec   (calibrated on the enrolment crops)",
        "NNCF post-training INT8 quantization (the optional extra: pip install 'facefleet[quantize]') of a "
        "model in the server's store into NAME@VERSION-int8, calibrated on the enrolled people's aligned "
        "crops (or on the faces of --photos). It is published, ready to roll out, only when its "
        "embeddings of held-out faces reach a cosine to the float model of at least 0.985 (min) and 0.995 "
        "(mean) and no pair of faces changes its decision at any --threshold (the agents' matching "
        "threshold, 0.363 by default; repeat it for each door threshold) or at the server's "
        "snapshots.cluster_threshold, which groups unknown faces; otherwise it is refused with the "
        "figures (exit 65). With --in-place it is published to run in the float model's place: its "
        "rollout keeps the float model's gallery, agents that store the float model run it, under its "
        "id, and measure the variant among their precisions (each runs it where it is the fastest that "
        "passes the guard at its own thresholds); without it, it is a model of its own, with a gallery "
        "re-embedded by its rollout. Detection models stay in float.",
    )
    quantize.add_argument("model_id", metavar="MODEL_ID", help="name@version, e.g. sface@2021dec")
    quantize.add_argument("--photos", type=Path, metavar="DIR", help="photos with faces instead of the crops")
    quantize.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="calibration samples")
    quantize.add_argument("--version", help="version of the new model (default: VERSION-int8)")
    quantize.add_argument(
        "--threshold",
        type=float,
        action="append",
        dest="thresholds",
        metavar="COSINE",
        help=f"a threshold agents decide at, for the guard (repeatable; default {DEFAULT_THRESHOLD})",
    )
    quantize.add_argument(
        "--in-place",
        action="store_true",
        help="publish it to run in the float model's place on the agents (same id and gallery)",
    )
    quantize.set_defaults(handler=_quantize, local_only="models quantize")
    for verb in (defaults, publish, listing, show, retire, quantize):
        verb.add_argument("--json", action="store_true", help="machine-readable output")


def _register_rollouts(commands: Any, make: Callable[..., Any]) -> None:
    group = make(commands, "rollout", "roll model versions out to the fleet", "facefleet-server rollout list")
    verbs = group.add_subparsers(dest="rollout_command", metavar="VERB", required=True)
    start = make(
        verbs,
        "start",
        "roll a published model out to all agents, a group, or a percentage",
        "facefleet-server rollout start mini-xception@fer2013-fp32 --percent 10 --max-failures 2",
        "Target a published model at agents. An embedding model first re-embeds every enrolled person from "
        "the retained crops; agents receive it once its gallery is complete. With --max-failures, the "
        "rollout stops by itself once more agents refuse it (their activation failed for good).",
    )
    start.add_argument("model_id", metavar="MODEL_ID", help="name@version")
    target = start.add_mutually_exclusive_group(required=True)
    target.add_argument("--all", action="store_true", help="every agent")
    target.add_argument("--group", help="agents that declare this group")
    target.add_argument("--percent", type=int, help="this percentage of the fleet (1–100), a canary")
    start.add_argument(
        "--max-failures",
        metavar="N|P%",
        help="refusals tolerated: a count (2) or a percentage of the agents it reached (20%%); one more "
        "stops the rollout (default: no limit)",
    )
    start.add_argument(
        "--on-failures",
        choices=FAILURE_ACTIONS,
        help="what stopping means: pause it (agents that took it keep it) or roll it back (default: pause)",
    )
    start.set_defaults(handler=_start)
    listing = make(verbs, "list", "list rollouts, newest first", "facefleet-server rollout list --json")
    listing.set_defaults(handler=_list_rollouts)
    show = make(verbs, "show", "a rollout and its state on each agent", "facefleet-server rollout show 3")
    show.set_defaults(handler=_show_rollout)
    pause = make(verbs, "pause", "announce to no more agents", "facefleet-server rollout pause 3")
    pause.set_defaults(handler=partial(_change, "pause"))
    resume = make(
        verbs,
        "resume",
        "resume a paused rollout and/or widen a percent rollout",
        "facefleet-server rollout resume 3 --percent 50",
    )
    resume.add_argument("--percent", type=int, help="widen to this percentage")
    resume.set_defaults(handler=partial(_change, "resume"))
    rollback = make(
        verbs,
        "rollback",
        "send its agents back to the version they ran before; also ends a rollout stuck preparing (its "
        f"preparer was killed; one without progress for {PREPARING_STALE_SECONDS:.0f} s is rolled back "
        "anyway)",
        "facefleet-server rollout rollback 3",
    )
    rollback.set_defaults(handler=partial(_change, "rollback"))
    for verb in (start, listing, show, pause, resume, rollback):
        if verb is not start and verb is not listing:
            verb.add_argument("rollout_id", metavar="ID", type=int, help="rollout id (`rollout list`)")
        verb.add_argument("--json", action="store_true", help="machine-readable output")


# -- models ------------------------------------------------------------------------------------------


def _runtime(context: Context) -> Runtime:
    return Runtime(context.config.runtime.settings(context.paths.state_dir))


def _catalog(context: Context, runtime: Runtime | None = None) -> ModelCatalog | RemoteCatalog:
    if context.remote is not None:
        return RemoteCatalog(context.remote, context.config.models.convert_timeout_s)
    return _local_catalog(context, runtime)


def _local_catalog(context: Context, runtime: Runtime | None = None) -> ModelCatalog:
    return ModelCatalog(
        context.state.models,
        ModelStore(context.paths.models),
        runtime,
        context.config.models.conversion_limits(),
    )


def _import_defaults(context: Context, args: argparse.Namespace) -> int:
    from facefleet.vision.models.importer import import_defaults

    runtime = _runtime(context)
    catalog = _local_catalog(context, runtime)
    with context.console.status("importing the default models…"):
        published = catalog.record_all(import_defaults(runtime, catalog.store))
    if context.json_output:
        context.print_json([{"task": m.task, "model_id": m.model_id} for m in published])
        return EXIT_OK
    for model in published:
        context.console.print(f"{model.task}: {model.model_id}", markup=False)
    return EXIT_OK


def _publish(context: Context, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise NotFoundError(
            f"{path}: no such model file or folder; give an ONNX, TFLite or IR file or folder"
        )
    with context.audited("models.publish", f"{args.name}@{args.version}"):
        catalog = _catalog(context, None if context.remote else _runtime(context))
        with context.console.status(Text(f"converting {path}…")):
            model = catalog.publish(path, args.task, args.name, args.version, args.precision, args.licence)
    if context.json_output:
        context.print_json(model_json(model))
        return EXIT_OK
    context.console.print(
        f"published {model.model_id} ({model.task}, {model.precision}, {model.size / 2**20:.1f} MiB); "
        f"roll it out with `facefleet-server rollout start {model.model_id} --percent 10`",
        markup=False,
    )
    return EXIT_OK


def _list_models(context: Context, args: argparse.Namespace) -> int:
    models = _catalog(context).published()
    if context.json_output:
        context.print_json([model_json(m, files=False) for m in models])
        return EXIT_OK
    if not models:
        context.console.print(
            "no published models; `facefleet-server models import-defaults` or `models publish PATH …`",
            markup=False,
        )
        return EXIT_OK
    table = new_table(
        "model", "task", "precision", "size", "licence", "published", "retired", whole=("model",)
    )
    for m in models:
        table.add_row(
            m.model_id,
            m.task,
            m.precision if m.runs_in_place_of is None else f"{m.precision} (in {m.runs_in_place_of}'s place)",
            f"{m.size / 2**20:.1f} MiB",
            m.licence,
            m.published_at.isoformat(timespec="seconds"),
            m.retired_at.isoformat(timespec="seconds") if m.retired_at else "",
        )
    context.console.print(table)
    return EXIT_OK


def _show_model(context: Context, args: argparse.Namespace) -> int:
    model = _catalog(context).show(args.model_id)
    if context.json_output:
        context.print_json({**model_json(model), "manifest_json": model.manifest_json})
        return EXIT_OK
    state = f"retired {model.retired_at.isoformat(timespec='seconds')}" if model.retired_at else "published"
    context.console.print(f"{model.model_id}: {model.task}, {model.precision}, {state}", markup=False)
    table = new_table("file", "bytes", "sha256", whole=("file",))
    for f in model.files:
        table.add_row(f.name, str(f.size), f.sha256)
    context.console.print(table)
    return EXIT_OK


def _guarded_thresholds(context: Context, given: list[float] | None) -> tuple[float, ...]:
    """The cosines a quantized model must not change a decision at: those given (the agents' matching
    threshold by default), and the one the server groups unknown faces at."""
    thresholds = [*(given or [DEFAULT_THRESHOLD]), context.config.snapshots.cluster_threshold]
    return tuple(dict.fromkeys(thresholds))


def _quantize(context: Context, args: argparse.Namespace) -> int:
    runtime = _runtime(context)
    catalog = _local_catalog(context, runtime)
    with context.audited("models.quantize", args.model_id):
        source = find_model(catalog.store, args.model_id)
        with context.console.status(f"quantizing {source.manifest.model_id}…"):
            if args.photos is not None:
                photos = image_files([args.photos])
                faces = faces_from_photos(runtime, catalog.store.active("detection"), photos)
            else:
                faces = _enrolment_faces(context)
            try:
                result = quantize_model(
                    runtime,
                    catalog.store,
                    source,
                    faces,
                    samples=args.samples,
                    thresholds=_guarded_thresholds(context, args.thresholds),
                    version=args.version,
                    in_place=args.in_place,
                )
            except QuantizationError as exc:
                if context.json_output and exc.figures is not None:
                    context.print_json({"model": args.model_id, "refused": str(exc), "guard": exc.figures})
                raise
        published = catalog.record(result.model)
    if context.json_output:
        context.print_json(
            {
                **model_json(published, files=False),
                "quantized_from": source.manifest.model_id,
                "kept_in_float": list(result.kept_in_float),
                "guard": result.figures.to_json(),
            }
        )
        return EXIT_OK
    role = f"to run in {source.manifest.model_id}'s place" if args.in_place else "a model of its own"
    context.console.print(
        f"published {published.model_id} (INT8, from {source.manifest.model_id}, {role}; roll it out "
        f"with `facefleet-server rollout start {published.model_id} …`): {describe(result.figures)}",
        markup=False,
    )
    return EXIT_OK


def _enrolment_faces(context: Context) -> list[FaceSample]:
    """The aligned crops kept for every enrolled person, as faces to calibrate on."""
    crops = []
    after = ""
    while people := context.state.list_people(after=after, limit=100):
        for person in people:
            for crop in context.state.crops(person.person_id):
                image = cv2.imdecode(np.frombuffer(crop.data, dtype=np.uint8), cv2.IMREAD_COLOR)
                if image is not None and image.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3):
                    crops.append(np.asarray(image, dtype=np.uint8))
        after = people[-1].person_id
    if not crops:
        raise InvalidArgumentError(
            "no enrolment crops to calibrate on: enrol people first, or give --photos DIR"
        )
    return faces_from_crops(crops, "enrolment crop")


def _retire_model(context: Context, args: argparse.Namespace) -> int:
    with context.audited("models.retire", args.model_id):
        model = _catalog(context).retire(args.model_id)
    if context.json_output:
        context.print_json(model_json(model, files=False))
        return EXIT_OK
    context.console.print(f"model {model.model_id} retired: no new rollouts, no downloads", markup=False)
    return EXIT_OK


def model_json(model: PublishedModel, *, files: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model_id": model.model_id,
        "task": model.task,
        "precision": model.precision,
        "licence": model.licence,
        "size": model.size,
        "published_at": model.published_at.isoformat(),
        "retired_at": model.retired_at.isoformat() if model.retired_at else None,
        "runs_in_place_of": model.runs_in_place_of,
    }
    if files:
        data["files"] = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in model.files]
    return data


# -- rollouts ----------------------------------------------------------------------------------------


def _control(context: Context, runtime: Runtime | None = None) -> RolloutControl | RemoteControl:
    if context.remote is not None:
        return RemoteControl(context.remote)
    return RolloutControl(
        context.state,
        _local_catalog(context, runtime),
        runtime=runtime,
        settle_seconds=2 * context.config.fleet.poll_seconds + 1.0,
    )


def _start(context: Context, args: argparse.Namespace) -> int:
    with context.audited("rollouts.start", args.model_id):
        started = _started(context, args)
    return _show_started(context, started)


def _started(context: Context, args: argparse.Namespace) -> StartedRollout:
    if args.all:
        target = Target("all")
    elif args.group is not None:
        target = Target("group", group=args.group)
    else:
        target = Target("percent", percent=args.percent)
    if args.on_failures is not None and args.max_failures is None:
        raise InvalidArgumentError("--on-failures needs --max-failures (e.g. --max-failures 2)")
    max_failures = None if args.max_failures is None else MaxFailures.parse(args.max_failures)
    model = _catalog(context).show(args.model_id)
    runtime = _runtime(context) if model.task == "embedding" and context.remote is None else None
    start = partial(
        _control(context, runtime).start, max_failures=max_failures, on_failures=args.on_failures or "pause"
    )
    if runtime is None:
        started = start(args.model_id, target)
    else:
        with Progress(console=context.console, transient=True, disable=context.json_output) as bar:
            task = bar.add_task(f"re-embedding the gallery with {args.model_id}", total=None)
            started = start(
                args.model_id,
                target,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    return started


def _show_started(context: Context, started: StartedRollout) -> int:
    rollout = started.rollout
    if context.json_output:
        context.print_json(
            {
                **rollout_json(rollout),
                "reembedded": list(started.reembedded),
                "without_crops": list(started.without_crops),
                "runs_in_place_of": started.runs_in_place_of,
            }
        )
        return EXIT_OK
    context.console.print(
        f"rollout {rollout.rollout_id}: {rollout.model_id} to {rollout.target.describe()}, {rollout.state}"
        f"{_budget(rollout, ', ')}",
        markup=False,
    )
    gallery = started.runs_in_place_of or rollout.model_id
    if started.runs_in_place_of is not None:
        context.console.print(
            f"agents that run {gallery} keep it and its gallery, and measure {rollout.model_id} among their "
            f"precisions; {len(started.reembedded)} people embedded with {gallery} from their crops",
            markup=False,
        )
    elif rollout.task == "embedding":
        context.console.print(f"re-embedded {len(started.reembedded)} people from their crops", markup=False)
    if started.without_crops:
        context.console.print(
            f"warning: {len(started.without_crops)} people have no retained crops and were not re-embedded; "
            f"{gallery} will not recognise them until they are re-enrolled: "
            + ", ".join(started.without_crops),
            markup=False,
        )
    return EXIT_OK


def _list_rollouts(context: Context, args: argparse.Namespace) -> int:
    found = _control(context).all_rollouts()
    if context.json_output:
        context.print_json([rollout_json(r) for r in found])
        return EXIT_OK
    if not found:
        context.console.print(
            "no rollouts; start one with `facefleet-server rollout start MODEL_ID --percent 10`"
        )
        return EXIT_OK
    table = new_table(
        "id", "model", "task", "target", "state", "max failures", "created", "updated", "reason",
        whole=("id", "model", "state"),
    )  # fmt: skip
    for r in found:
        table.add_row(
            str(r.rollout_id),
            r.model_id,
            r.task,
            r.target.describe(),
            r.state,
            _budget(r),
            r.created_at.isoformat(timespec="seconds"),
            r.updated_at.isoformat(timespec="seconds"),
            r.reason,
        )
    context.console.print(table)
    return EXIT_OK


def _show_rollout(context: Context, args: argparse.Namespace) -> int:
    rollout, devices = _control(context).show(args.rollout_id)
    if context.json_output:
        context.print_json({**rollout_json(rollout), "devices": [device_json(d) for d in devices]})
        return EXIT_OK
    context.console.print(
        f"rollout {rollout.rollout_id}: {rollout.model_id} ({rollout.task}) to {rollout.target.describe()}, "
        f"{rollout.state}; announced to {len(devices)} agents{_budget(rollout, '; ')}",
        markup=False,
    )
    if rollout.reason:
        context.console.print(f"{rollout.state.replace('_', ' ')} because {rollout.reason}", markup=False)
    table = new_table("device", "state", "previous", "updated", "reason", whole=("device",))
    for d in devices:
        table.add_row(
            d.device_id, d.state, d.previous_model_id, d.updated_at.isoformat(timespec="seconds"), d.reason
        )
    context.console.print(table)
    return EXIT_OK


def _change(verb: str, context: Context, args: argparse.Namespace) -> int:
    with context.audited(f"rollouts.{verb}", str(args.rollout_id)):
        control = _control(context)
        if verb == "pause":
            rollout = control.pause(args.rollout_id)
        elif verb == "resume":
            rollout = control.resume(args.rollout_id, args.percent)
        else:
            rollout = control.rollback(args.rollout_id)
    if context.json_output:
        context.print_json(rollout_json(rollout))
        return EXIT_OK
    context.console.print(
        f"rollout {rollout.rollout_id}: {rollout.model_id} to {rollout.target.describe()}, "
        f"now {rollout.state}",
        markup=False,
    )
    return EXIT_OK


def _budget(rollout: Rollout, prefix: str = "") -> str:
    """'2, then pause' after prefix and 'max failures ' (without prefix: alone), or '' for a rollout
    without a failure budget."""
    if rollout.max_failures is None:
        return ""
    budget = f"{rollout.max_failures.describe()}, then {rollout.on_failures}"
    return f"{prefix}max failures {budget}" if prefix else budget


def rollout_json(rollout: Rollout) -> dict[str, Any]:
    return {
        "rollout_id": rollout.rollout_id,
        "task": rollout.task,
        "model_id": rollout.model_id,
        "target": {
            "kind": rollout.target.kind,
            "group": rollout.target.group,
            "percent": rollout.target.percent,
        },
        "state": rollout.state,
        "reason": rollout.reason,
        "max_failures": None
        if rollout.max_failures is None
        else {"count": rollout.max_failures.count, "percent": rollout.max_failures.percent},
        "on_failures": rollout.on_failures,
        "created_at": rollout.created_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
    }


def device_json(row: DeviceRollout) -> dict[str, Any]:
    return {
        "device_id": row.device_id,
        "state": row.state,
        "previous_model_id": row.previous_model_id,
        "reason": row.reason,
        "updated_at": row.updated_at.isoformat(),
    }
