"""The checked-in generated code is what scripts/gen-protos makes from the .proto files today."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "protos" / "facefleet" / "v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen-protos"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    fresh = sorted(p.name for p in (tmp_path / "facefleet" / "v1").iterdir())
    checked_in = sorted(p.name for p in GENERATED.iterdir() if "_pb2" in p.name)
    assert checked_in == fresh, "generated files were added or removed: run scripts/gen-protos"
    stale = [
        name
        for name in fresh
        if not filecmp.cmp(GENERATED / name, tmp_path / "facefleet" / "v1" / name, False)
    ]
    assert stale == [], f"stale generated code {stale}: run scripts/gen-protos and commit the result"
    assert {p.stem for p in GENERATED.glob("*.proto")} == {
        "admin",
        "devices",
        "events",
        "fleet",
        "gallery",
        "models",
        "query",
    }


def test_every_service_and_message_has_a_comment() -> None:
    for proto in sorted(GENERATED.glob("*.proto")):
        lines = proto.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if line.startswith(("service ", "enum ")):
                previous = lines[index - 1].strip()
                assert previous.startswith("//"), f"{proto.name}: {line!r} needs a comment"
