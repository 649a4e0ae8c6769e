"""`facefleet-agent models …`: import, list, verify, activate and quantize models in the model store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from facefleet.agent.cli.context import Context
from facefleet.agent.updates.statuses import load_statuses, status_to_json
from facefleet.core.cli import add_command
from facefleet.core.errors import EXIT_IO, EXIT_OK, FaceFleetError
from facefleet.link.models import ModelStatus
from facefleet.vision.detection import compile_detector
from facefleet.vision.errors import ModelSpecError, QuantizationError
from facefleet.vision.images import image_files
from facefleet.vision.models.importer import PRECISIONS, import_defaults, import_model
from facefleet.vision.models.quantize import (
    DEFAULT_SAMPLES,
    describe,
    faces_from_photos,
    find_model,
    int8_variants,
    quantize_locally,
    quantize_model,
    quantizer_installed,
)
from facefleet.vision.models.quantize import PRECISION as INT8
from facefleet.vision.models.store import StoredModel, repair_hint
from facefleet.vision.models.tasks import TASKS
from facefleet.vision.pipeline import AnalyzerSettings
from facefleet.vision.precision.probes import TUNED_TASKS
from facefleet.vision.precision.samples import sample_photos


def register(commands: Any) -> None:
    models = add_command(
        commands,
        "models",
        "import, list, verify, activate, quantize and tune models",
        "facefleet-agent models import-defaults && facefleet-agent models verify",
        description="Manage the model store (OpenVINO IR with manifests) under <state_dir>/models.",
        json_output=False,
    )
    verbs = models.add_subparsers(dest="models_command", metavar="VERB", required=True)

    defaults = add_command(
        verbs,
        "import-defaults",
        "import the models bundled in the installed carrier packages",
        "facefleet-agent models import-defaults --precision FP16",
        description="Convert YuNet, SFace, mini-Xception (and the face mesh, if installed) to IR, then build "
        "an INT8 variant of the embedding model on the bundled photos when NNCF (facefleet[quantize]) is "
        "installed: the agent runs it in the float model's place if it is faster here and passes the "
        "accuracy guard at the agent's thresholds.",
    )
    defaults.add_argument("--precision", choices=PRECISIONS, default="FP16", help="IR weight precision")
    defaults.add_argument(
        "--no-int8",
        dest="int8",
        action="store_false",
        help="do not build the INT8 variant of the embedding model",
    )
    defaults.set_defaults(handler=_import_defaults)

    own = add_command(
        verbs,
        "import",
        "import your own ONNX, TFLite or IR model",
        "facefleet-agent models import det.onnx --task detection --name mine --version 1",
        description="Convert a model to IR, check that it fits the task, and store it. An OpenVINO IR is "
        "its .xml with its .bin beside it (NAME.xml, NAME.bin), or both files given.",
    )
    own.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="model file (.onnx, .tflite, or an IR's .xml with its .bin beside it), or an IR's .xml and .bin",
    )
    own.add_argument("--task", choices=TASKS, required=True)
    own.add_argument("--name", required=True)
    own.add_argument("--version", required=True)
    own.add_argument("--licence", default="unknown", help="licence of the model, recorded in the manifest")
    own.add_argument("--precision", choices=PRECISIONS, default="FP16")
    own.add_argument("--activate", action="store_true", help="make it the active model of its task")
    own.set_defaults(handler=_import)

    listing = add_command(
        verbs,
        "list",
        "list stored models",
        "facefleet-agent models list --json",
        description="List the stored models, marking the active one of each task.",
    )
    listing.set_defaults(handler=_list)

    tune = add_command(
        verbs,
        "tune",
        "measure f32, bf16/f16 and INT8 variants of the active models and choose per device",
        "facefleet-agent models tune --json   (--force: measure again)",
        description="For each active detection, embedding, expression and attributes model: time every "
        "candidate precision on the configured device (the best of 4 interleaved rounds, each the median "
        "of 7 runs) and guard it against the f32 outputs of the same model on the bundled sample photos; "
        "the fastest that passes (and is at least 1.1x faster than f32) is cached in "
        '<state_dir>/cache/precision.json and used by the agent under inference_precision = "auto". '
        "An INT8 variant of an embedding model runs in its place against its gallery, so its guard checks "
        "every decision at the matching threshold and each door's.",
    )
    tune.add_argument("--force", action="store_true", help="measure again even when a choice is cached")
    tune.set_defaults(handler=_tune)

    verify = add_command(
        verbs,
        "verify",
        "re-hash every file and compile every model",
        "facefleet-agent models verify --device CPU   (exit 74 when a model fails)",
        description="Check that the active model of each task `run` loads is there (exit 74 with `run`'s "
        "message when the model store is missing, active.json unreadable or a task has no active model), "
        "then each stored model's files against its manifest, and compile it on the device.",
    )
    verify.add_argument("--device", help="compile on this OpenVINO device instead of the configured one")
    verify.set_defaults(handler=_verify)

    activate = add_command(
        verbs,
        "activate",
        "make a stored version the active one of its task",
        "facefleet-agent models activate expression mini-xception fer2013",
        description="Switch the active version of a task atomically. --json prints the model now active "
        "as `models list --json` lists it.",
    )
    activate.add_argument("task", choices=TASKS)
    activate.add_argument("name")
    activate.add_argument("version")
    activate.set_defaults(handler=_activate)

    quantize = add_command(
        verbs,
        "quantize",
        "INT8-quantize an embedding model into a new version, behind an accuracy guard",
        "facefleet-agent models quantize sface@2021dec --photos ./faces --activate",
        description="NNCF post-training INT8 quantization (the optional extra: pip install "
        "'facefleet[quantize]'), calibrated on the faces of a folder of photos, into NAME@VERSION-int8. "
        "It is kept only when its embeddings of held-out faces reach a cosine to the float model of at "
        "least 0.985 (min) and 0.995 (mean) and no pair of faces changes its decision at the matching "
        "threshold or a door's; otherwise it is refused with the figures (exit 65). Detection models stay "
        "in float.",
    )
    quantize.add_argument("model", metavar="MODEL_ID", help="NAME@VERSION or TASK/NAME/VERSION")
    quantize.add_argument(
        "--photos", type=Path, required=True, metavar="DIR", help="photos with faces (a folder or a file)"
    )
    quantize.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="calibration samples (augmented faces)"
    )
    quantize.add_argument("--version", help="version of the new model (default: VERSION-int8)")
    quantize.add_argument("--activate", action="store_true", help="make it the active model of its task")
    quantize.set_defaults(handler=_quantize)


def _import_defaults(context: Context, args: argparse.Namespace) -> int:
    with context.errors.status("importing the default models…"):
        models = import_defaults(context.runtime, context.model_store, precision=args.precision)
    variant = _int8_on_site(context) if args.int8 else None
    _show(context, models if variant is None or variant in models else [*models, variant])
    return EXIT_OK


def _int8_on_site(context: Context) -> StoredModel | None:
    """The INT8 variant of the active embedding model: the stored one, or one built now on the bundled
    photos; None (and why, on stderr) when NNCF is missing or the accuracy guard refuses it."""
    store = context.model_store
    source = store.active("embedding")
    if source.manifest.precision == INT8:
        return None
    found = int8_variants(store, source)
    if found:
        return found[0]
    model_id = source.manifest.model_id
    if not quantizer_installed():
        context.errors.print(
            f"{model_id} runs in float: NNCF is not installed, so no INT8 variant was built (it embeds a "
            "face about twice as fast as f32). Install it with pip install 'facefleet[quantize]' and run "
            "`facefleet-agent models import-defaults` again",
            markup=False,
            soft_wrap=True,
        )
        return None
    thresholds = context.decision_thresholds(model_id)
    with context.errors.status(f"building an INT8 variant of {model_id} on the bundled photos…"):
        try:
            result = quantize_locally(context.runtime, store, source, sample_photos(), thresholds)
        except FaceFleetError as exc:  # the float models are imported: the variant is an extra
            context.errors.print(
                f"{model_id} runs in float, no INT8 variant was built: {exc}", markup=False, soft_wrap=True
            )
            return None
    context.errors.print(
        f"built {result.model.manifest.model_id} ({describe(result.figures)}); the agent runs it in "
        f"{model_id}'s place where it is the fastest candidate that passes the guard (`models tune`)",
        markup=False,
        soft_wrap=True,
    )
    return result.model


def _import(context: Context, args: argparse.Namespace) -> int:
    source, weights = _import_files(args.paths)
    model = import_model(
        context.runtime,
        context.model_store,
        source,
        task=args.task,
        name=args.name,
        version=args.version,
        licence=args.licence,
        precision=args.precision,
        activate=True if args.activate else None,
        weights=weights,
        limits=context.config.models.conversion_limits(),
    )
    _show(context, [model])
    return EXIT_OK


def _import_files(paths: list[Path]) -> tuple[Path, Path | None]:
    """The model file and, for an IR given as its two files (in either order), its weights."""
    if len(paths) == 1:
        return paths[0], None
    bins = [p for p in paths if p.suffix.lower() == ".bin"]
    xmls = [p for p in paths if p.suffix.lower() == ".xml"]
    if len(paths) == 2 and len(bins) == 1 and len(xmls) == 1:
        return xmls[0], bins[0]
    raise ModelSpecError(
        f"{', '.join(map(str, paths))}: give one model file, or an OpenVINO IR's .xml and its .bin"
    )


def _list(context: Context, args: argparse.Namespace) -> int:
    _show(context, context.model_store.models())
    return EXIT_OK


def _verify(context: Context, args: argparse.Namespace) -> int:
    _active_models(context)  # what `run` loads first: its error (exit 74) when it would stop on it
    results: list[dict[str, Any]] = []
    for model in context.model_store.models():
        problems = context.model_store.verify_files(model)
        fix = repair_hint(model) if problems else None
        if not problems:
            try:
                if model.manifest.task == "detection":
                    compile_detector(context.runtime, model.xml_path)
                else:
                    context.runtime.compile(model.xml_path)
            except (FaceFleetError, RuntimeError) as exc:
                problems.append(f"{model.xml_path}: does not compile on {context.runtime.device}: {exc}")
        results.append({"model": _ref(model), "ok": not problems, "problems": problems, "fix": fix})
    if context.json_output:
        context.print_json({"device": context.runtime.device, "models": results})
    else:
        for result in results:
            status = Text("ok", "green") if result["ok"] else Text("FAILED", "red")
            context.console.print(Text.assemble(status, f" {result['model']}"))
            for problem in result["problems"]:
                context.console.print(f"    {problem}", markup=False)
            if result["fix"]:
                context.console.print(f"    {result['fix']}", markup=False)
    return EXIT_OK if all(r["ok"] for r in results) else EXIT_IO


def _active_models(context: Context) -> list[StoredModel]:
    """The active model of each task `run` analyses with (detection, embedding, expression, and attributes
    when the config enables them), read as `run` reads them: the ModelStoreError it stops with (exit 74) when
    the model store is missing, its active.json unreadable, or a task has no active model."""
    settings = AnalyzerSettings(attributes=context.config.attributes.enabled)
    tasks = ["detection", "embedding"][: 1 + settings.embeddings]
    tasks += ["expression"] * settings.expressions + ["attributes"] * settings.attributes
    return [context.model_store.active(task) for task in tasks]


def _tune(context: Context, args: argparse.Namespace) -> int:
    plan = context.precisions
    runtime = context.runtime
    results: list[dict[str, Any]] = []
    with context.errors.status(f"measuring precisions on {runtime.device}…"):
        for task in TUNED_TASKS:
            if task not in context.model_store.active_map():
                continue
            model = context.model_store.active(task)
            cached = None if args.force else plan.cached(model)
            measured = cached or plan.tune(model)
            runs_at = plan.choice(model)
            results.append(
                {
                    "task": task,
                    "model_id": model.manifest.model_id,
                    "cached": cached is not None,
                    "chosen": measured.summary(),
                    "runs_at": runs_at.summary(),
                    "measurements": [m.to_json() for m in measured.measurements],
                }
            )
    if context.json_output:
        context.print_json(
            {
                "device": runtime.device,
                "device_name": runtime.device_name,
                "openvino": runtime.version,
                "models": results,
            }
        )
        return EXIT_OK
    table = Table("task", "model", "candidate", "median ms", "guard", "chosen")
    for result in results:
        chosen = result["chosen"]
        for m in result["measurements"]:
            label = m["candidate"] if m["variant"] is None else f"{m['candidate']} ({m['variant']})"
            is_chosen = m["precision"] == chosen["precision"] and m["variant"] == chosen["variant"]
            verdict = "passed" if m["guard"]["passed"] else "REFUSED"
            table.add_row(
                result["task"],
                result["model_id"],
                label,
                f"{m['median_ms']:.2f}",
                f"{verdict}: {m['guard']['summary']}",
                "*" if is_chosen else "",
            )
    context.console.print(table)
    for result in results:
        runs_at = result["runs_at"]
        if runs_at["source"] != "auto":
            context.console.print(
                f"{result['task']} runs at {runs_at['precision']} anyway: {runs_at['reason']}", markup=False
            )
    return EXIT_OK


def _activate(context: Context, args: argparse.Namespace) -> int:
    model = context.model_store.activate(args.task, args.name, args.version)
    if context.json_output:
        active = context.model_store.active_map()
        context.print_json(_model_json(context, model, active, _statuses(context)))
    else:
        context.console.print(f"active {args.task} model: {_ref(model)}", markup=False)
    return EXIT_OK


def _quantize(context: Context, args: argparse.Namespace) -> int:
    store = context.model_store
    source = find_model(store, args.model)
    photos = image_files([args.photos])
    thresholds = context.decision_thresholds(source.manifest.model_id)
    with context.errors.status(f"quantizing {source.manifest.model_id}…"):
        faces = faces_from_photos(context.runtime, store.active("detection"), photos)
        try:
            result = quantize_model(
                context.runtime,
                store,
                source,
                faces,
                samples=args.samples,
                thresholds=thresholds,
                version=args.version,
                activate=args.activate,
            )
        except QuantizationError as exc:
            if context.json_output and exc.figures is not None:
                refusal = {"model": source.manifest.model_id, "refused": str(exc), "guard": exc.figures}
                context.print_json(refusal)
            raise
    if context.json_output:
        context.print_json(
            {
                "model": _ref(result.model),
                "model_id": result.model.manifest.model_id,
                "quantized_from": source.manifest.model_id,
                "active": args.activate,
                "kept_in_float": list(result.kept_in_float),
                "guard": result.figures.to_json(),
            }
        )
    else:
        context.console.print(
            f"{_ref(result.model)} (INT8, from {source.manifest.model_id}): {describe(result.figures)}",
            markup=False,
        )
    return EXIT_OK


def _show(context: Context, models: list[StoredModel]) -> None:
    """The models with the active mark and, for versions a server rollout assigned, where they stand."""
    active = context.model_store.active_map()
    statuses = _statuses(context)
    if context.json_output:
        context.print_json([_model_json(context, m, active, statuses) for m in models])
        return
    table = Table("task", "name", "version", "precision", "runs at", "source", "active", "rollout")
    for m in models:
        source = m.manifest.source
        origin = f"{source.package}=={source.package_version}" if source.package else source.path
        is_active = active.get(m.manifest.task) == f"{m.manifest.name}/{m.manifest.version}"
        status = statuses.pop(m.manifest.model_id, None)
        table.add_row(
            m.manifest.task,
            m.manifest.name,
            m.manifest.version,
            m.manifest.precision,
            _runs_at(context, m),
            origin,
            "*" if is_active else "",
            "" if status is None else f"{status.state} (rollout {status.rollout_id})",
        )
    context.console.print(table)
    for status in statuses.values():  # assigned versions that never made it into the store
        context.console.print(
            f"{status.task} {status.model_id} (rollout {status.rollout_id}): {status.state}: {status.reason}",
            markup=False,
        )


def _runs_at(context: Context, model: StoredModel) -> str:
    """The inference precision (or INT8 variant) the model runs at on the configured device, and why; for
    an inactive INT8 variant, the model it may run in place of."""
    quantized_from = model.manifest.extra.get("quantized_from")
    active = context.model_store.active_map().get(model.manifest.task)
    if quantized_from and active != f"{model.manifest.name}/{model.manifest.version}":
        return f"variant of {quantized_from}"
    choice = context.precisions.choice(model)
    return f"{choice.label} ({'measured' if choice.source == 'auto' else choice.source})"


def _status_json(status: ModelStatus | None) -> dict[str, Any] | None:
    return None if status is None else status_to_json(status)


def _model_json(
    context: Context, model: StoredModel, active: dict[str, str], statuses: dict[str, ModelStatus]
) -> dict[str, Any]:
    """A stored model as `models list --json` lists it: its manifest, whether it is the active version of
    its task, where a server rollout of it stands (statuses by model id), and what it runs at."""
    manifest = model.manifest
    return {
        **manifest.to_json(),
        "active": active.get(manifest.task) == f"{manifest.name}/{manifest.version}",
        "rollout": _status_json(statuses.get(manifest.model_id)),
        "runs_at": context.precisions.choice(model).summary(),
    }


def _statuses(context: Context) -> dict[str, ModelStatus]:
    """Where the server rollouts assigned to this agent stand, by model id."""
    return {s.model_id: s for s in load_statuses(context.model_store).values()}


def _ref(model: StoredModel) -> str:
    return f"{model.manifest.task}/{model.manifest.name}/{model.manifest.version}"
