"""Where both command lines print: rich consoles sized for a terminal or for a pipe."""

from __future__ import annotations

import pytest

from facefleet.core.cli import PIPED_WIDTH, output_console


def test_output_into_a_pipe_is_wide_unless_columns_says_otherwise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest captures stdout and stderr, so neither is a terminal here."""
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_console().width == PIPED_WIDTH
    assert output_console(stderr=True).width == PIPED_WIDTH
    monkeypatch.setenv("COLUMNS", "100")
    assert output_console().width == 100
