"""redact(): the state database's URL as messages and logs show it, with every password masked, whichever
way the URL carries it, and the rest as written."""

from __future__ import annotations

import pytest

from facefleet.server.state.postgres.state import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ff@db:5432/fleet", "postgresql://ff@db:5432/fleet"),
        ("postgresql://ff:s3cret@db:5432/fleet", "postgresql://ff:***@db:5432/fleet"),
        ("postgresql://ff:p@ss@db/fleet", "postgresql://ff:***@db/fleet"),
        (
            "postgresql://ff@db/fleet?sslmode=verify-full&password=s3cret",
            "postgresql://ff@db/fleet?sslmode=verify-full&password=***",
        ),
        (
            "postgresql://ff@db/fleet?sslpassword=s3cret&sslkey=/etc/k.pem",
            "postgresql://ff@db/fleet?sslpassword=***&sslkey=/etc/k.pem",
        ),
        ("postgres://ff:a@db1,db2/fleet?pass%77ord=s3cret", "postgres://ff:***@db1,db2/fleet?pass%77ord=***"),
        ("host=db user=ff password='s3 cret' dbname=fleet", "user=ff password=*** dbname=fleet host=db"),
    ],
)
def test_a_password_is_masked_wherever_the_url_carries_it(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3" not in redact(url)


@pytest.mark.parametrize("url", ["host=db password='s3cret", "postgresql://ff:s3cret@[db/fleet"])
def test_a_url_that_cannot_be_parsed_is_not_shown(url: str) -> None:
    assert "s3cret" not in redact(url)
