"""`facefleet-agent analyze` and `devices`: run the vision pipeline on images, list OpenVINO devices."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from facefleet.agent.cli.context import Context
from facefleet.core.cli import add_command
from facefleet.core.errors import EXIT_DATA, EXIT_OK
from facefleet.vision.errors import ImageError, ModelStoreError
from facefleet.vision.images import image_files, read_image
from facefleet.vision.pipeline import AnalyzerSettings, FaceAnalyzer


def register(commands: Any) -> None:
    analyze = add_command(
        commands,
        "analyze",
        "find and describe every face in images",
        "facefleet-agent analyze photo.jpg\n  facefleet-agent analyze photos/ --json",
        description="Detect faces and print box, landmarks, score, quality and expression for each.",
    )
    analyze.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    analyze.add_argument("--device", help="OpenVINO device for this run (e.g. CPU, GPU, AUTO)")
    analyze.add_argument("--embeddings", action="store_true", help="include each face's embedding vector")
    analyze.add_argument(
        "--attributes",
        action="store_true",
        help="estimate each face's gender and age (on anyway with [attributes] enabled = true)",
    )
    analyze.set_defaults(handler=_analyze)

    devices = add_command(
        commands,
        "devices",
        "list OpenVINO devices and their properties",
        "facefleet-agent devices --json",
        description="List the devices the installed OpenVINO runtime can use here, and what precision each "
        "active model runs at on the configured device (and why: measured, override, not measured yet).",
    )
    devices.set_defaults(handler=_devices)


def make_analyzer(context: Context, attributes: bool = False) -> FaceAnalyzer:
    settings = AnalyzerSettings(
        detector=context.config.detector.settings(),
        jobs=context.config.runtime.jobs,
        attributes=attributes,
    )
    return FaceAnalyzer(context.runtime, context.model_store, settings, precisions=context.precisions)


def _analyze(context: Context, args: argparse.Namespace) -> int:
    paths = image_files(args.images)
    analyzer = make_analyzer(context, args.attributes or context.config.attributes.enabled)
    results: list[dict[str, Any]] = []
    failures: set[int] = set()
    for path in paths:
        try:
            frame = read_image(path)
        except ImageError as exc:
            results.append({"path": str(path), "error": str(exc), "faces": []})
            failures.add(exc.exit_code)
            continue
        faces = analyzer.analyze(frame)
        results.append(
            {
                "path": str(path),
                "width": int(frame.shape[1]),
                "height": int(frame.shape[0]),
                "faces": [face.to_json(include_embedding=args.embeddings) for face in faces],
            }
        )
    if context.json_output:
        context.print_json({"device": context.runtime.device, "images": results})
    else:
        _print_faces(context, results)
    # an unreadable image (65) outweighs a missing one (66)
    return EXIT_DATA if EXIT_DATA in failures else min(failures, default=EXIT_OK)


def _print_faces(context: Context, results: list[dict[str, Any]]) -> None:
    for result in results:
        if "error" in result:
            context.errors.print(result["error"], markup=False)
            continue
        context.console.print(
            f"{result['path']} ({result['width']}×{result['height']}): {len(result['faces'])} face(s)"
        )
        if not result["faces"]:
            continue
        table = Table("#", "box x1,y1,x2,y2", "score", "quality", "expression", "eyes (R, L)")
        for index, face in enumerate(result["faces"], start=1):
            expression = face["expression"]
            label = (
                f"{expression['label']} {max(expression['probabilities'].values()):.2f}"
                if expression
                else "-"
            )
            eyes = face["landmarks_xy"]
            table.add_row(
                str(index),
                ",".join(f"{v:.0f}" for v in face["box_xyxy"]),
                f"{face['score']:.3f}",
                f"{face['quality']['score']:.2f}",
                label,
                "  ".join("{:.0f},{:.0f}".format(*eyes[name]) for name in ("right_eye", "left_eye")),
            )
        context.console.print(table)


def _devices(context: Context, args: argparse.Namespace) -> int:
    runtime = context.runtime
    devices = {name: runtime.device_properties(name) for name in runtime.available_devices()}
    models = active_precisions(context)
    if context.json_output:
        context.print_json(
            {"openvino": runtime.version, "devices": devices, "device": runtime.device, "models": models}
        )
        return EXIT_OK
    context.console.print(f"OpenVINO {runtime.version}", markup=False)
    for name, properties in devices.items():
        table = Table(title=name, show_header=False)
        for key, value in properties.items():
            table.add_row(key, value)
        context.console.print(table)
    table = Table("task", "model", "runs at", "source", "why", title=f"active models on {runtime.device}")
    for entry in models:
        runs_at = entry["precision"] if entry["variant"] is None else f"int8 ({entry['variant']})"
        table.add_row(entry["task"], entry["model"], runs_at, entry["source"], entry["reason"])
    context.console.print(table)
    return EXIT_OK


def active_precisions(context: Context) -> list[dict[str, Any]]:
    """The active model of each task with what it runs at on the configured device: task, model (id),
    precision, variant (INT8 model id or None), source, reason."""
    active = context.model_store.active_map()
    rows = []
    for task in sorted(active):
        try:
            model = context.model_store.active(task)
        except ModelStoreError as exc:
            rows.append(
                {
                    "task": task,
                    "model": active[task],
                    "precision": None,
                    "variant": None,
                    "source": "error",
                    "reason": str(exc),
                }
            )
            continue
        choice = context.precisions.choice(model)
        rows.append({"task": task, "model": model.manifest.model_id, **choice.summary()})
    return rows
