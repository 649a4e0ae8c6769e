"""`facefleet-server certs …` and `devices …`: the site CA and the certificates it issues, and which devices
the server admits. Every certificate issued to a device is recorded by serial; a running server follows
device changes within `fleet.poll_seconds`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from facefleet.core.errors import EXIT_OK
from facefleet.link.checks import check_id, utc_now
from facefleet.server.api import certs
from facefleet.server.api.http.devices import DeviceOut
from facefleet.server.cli.context import Context, dump, when
from facefleet.server.domain.devices import MAX_REASON_CHARS
from facefleet.server.errors import FailedPreconditionError, NotFoundError, ServerConfigError
from facefleet.server.fleet.device_admin import DeviceView, change_device, device_views, record_certificate

EXPIRY_WARNING_DAYS = 30
"""`devices list` marks certificates that expire sooner than this."""


def register_certs(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands, "certs", "create the site CA and certificates", "facefleet-server certs issue door-1"
    )
    verbs = group.add_subparsers(dest="certs_command", metavar="VERB", required=True)
    init = make(
        verbs,
        "init",
        "create the CA and the server certificate in <state_dir>/tls",
        "facefleet-server certs init --server-name fleet.example.org --server-name 10.0.0.5",
    )
    init.add_argument(
        "--server-name", action="append", default=[], help="DNS name or IP agents dial (repeat)"
    )
    init.add_argument(
        "--force", action="store_true", help="replace an existing CA (old device certs stop working)"
    )
    init.add_argument("--json", action="store_true")
    init.set_defaults(handler=_certs_init, local_only="certs init", creates_state=True)
    for verb, help_text, example, description in (
        (
            "issue",
            "issue a device (client) certificate signed by the CA",
            "facefleet-server certs issue door-1 --out /tmp/door-1",
            "Issue a client certificate for a device and record its serial. A revoked device is admitted "
            "again with the new certificate.",
        ),
        (
            "renew",
            "issue a known device a new certificate before its current one expires",
            "facefleet-server certs renew door-1 --out /tmp/door-1",
            "Issue a new certificate for a device the server knows. Its older certificates keep working "
            "until the device first calls with the new one; then they are revoked.",
        ),
    ):
        issue = make(verbs, verb, help_text, example, description)
        issue.add_argument("device", help="device id (the agent's device_id)")
        issue.add_argument(
            "--out", type=Path, help="directory for DEVICE.pem/.key (default <state_dir>/tls/devices)"
        )
        issue.add_argument("--days", type=int, default=certs.LEAF_DAYS, help="validity in days")
        issue.add_argument("--json", action="store_true")
        issue.set_defaults(
            handler=_certs_issue,
            renew=verb == "renew",
            local_only=f"certs {verb}",
            creates_state=verb == "issue",
        )
    server = make(
        verbs,
        "server",
        "re-issue the server certificate (renewal, or new names)",
        "facefleet-server certs server --server-name fleet.example.org --server-name 10.0.0.5",
        "Re-issue the server certificate and key from the site CA, written where the server reads them "
        "([tls] server_cert and server_key, default <state_dir>/tls/server.pem and .key). Without "
        "--server-name the new certificate carries the names of the current one; given names are the whole "
        "new list, and one that would drop a name of the current certificate is refused unless --force "
        "(agents dialling a dropped name fail hostname verification). `systemctl reload facefleet-server` "
        "(SIGHUP) then serves it to new connections.",
    )
    server.add_argument(
        "--server-name",
        action="append",
        default=[],
        help="DNS name or IP agents dial (repeat; default: the current certificate's names)",
    )
    server.add_argument("--days", type=int, default=certs.LEAF_DAYS, help="validity in days")
    server.add_argument(
        "--force", action="store_true", help="drop names of the current certificate that are not given"
    )
    server.add_argument("--json", action="store_true")
    server.set_defaults(handler=_certs_server, local_only="certs server")


def register_devices(commands: Any, make: Callable[..., Any]) -> None:
    group = make(
        commands,
        "devices",
        "list, disable, enable or revoke devices",
        "facefleet-server devices revoke door-1 --wipe --reason stolen",
    )
    verbs = group.add_subparsers(dest="devices_command", metavar="VERB", required=True)
    listing = make(
        verbs,
        "list",
        "devices with status, certificate and last contact",
        "facefleet-server devices list --json",
        "Every device the server has registered or issued a certificate to: status (active, disabled, "
        "revoked) with the reason, the current certificate's serial and expiry, and when it was last seen.",
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_devices_list)
    for verb, help_text, example in (
        ("disable", "refuse a device until it is enabled again", "facefleet-server devices disable door-1"),
        ("enable", "admit a disabled device again", "facefleet-server devices enable door-1"),
        (
            "revoke",
            "refuse a device's certificates for good (a lost or stolen box)",
            "facefleet-server devices revoke door-1 --wipe --reason 'stolen 2026-12-01'",
        ),
    ):
        change = make(verbs, verb, help_text, example)
        change.add_argument("device", help="device id")
        change.add_argument("--reason", default="", help=f"why (at most {MAX_REASON_CHARS} characters)")
        if verb == "revoke":
            change.add_argument(
                "--wipe", action="store_true", help="tell the device to erase its gallery when it calls"
            )
        change.add_argument("--json", action="store_true")
        change.set_defaults(handler=_devices_change, action=verb)


def _certs_init(context: Context, args: argparse.Namespace) -> int:
    paths = context.paths
    server = certs.Issued(paths.server_cert, paths.server_key)
    ca = certs.init_ca(paths.tls_dir, server_names=args.server_name, force=args.force, server_target=server)
    context.state.head_revision()  # a new install's state database, beside its CA
    files = {"ca": {"cert": ca.cert, "key": ca.key}, "server": {"cert": server.cert, "key": server.key}}
    names = ", ".join(certs.server_names(server.cert.read_bytes()))
    _show_files(
        context, files, f"server certificate for {names}; keep ca.key secret: it signs device certificates"
    )
    return EXIT_OK


def _certs_issue(context: Context, args: argparse.Namespace) -> int:
    device_id = check_id("device id", args.device)
    action = "devices.renew" if args.renew else "devices.issue"
    with context.audited(action, device_id):
        if args.renew:
            known = device_views(context.state, (device_id,))
            if not known:
                raise NotFoundError(
                    f"no device {device_id!r} to renew; issue its first certificate with "
                    f"`facefleet-server certs issue {device_id}`"
                )
            if known[0].device.status == "revoked":
                raise FailedPreconditionError(
                    f"device {device_id!r} is revoked; `facefleet-server certs issue {device_id}` admits it "
                    "again with a new certificate"
                )
        issued = certs.issue_device(context.paths.tls_dir, device_id, out_dir=args.out, days=args.days)
        assert issued.not_before is not None
        assert issued.not_after is not None
        record_certificate(
            context.state, device_id, issued.serial, issued.not_before, issued.not_after, "local", utc_now()
        )
    files = {device_id: {"cert": issued.cert, "key": issued.key}, "ca": {"cert": context.paths.ca_cert}}
    note = f"certificate {issued.serial}, {_valid_until(issued)}"
    _show_files(context, files, f"{note}; install the three files on {device_id}")
    return EXIT_OK


def _certs_server(context: Context, args: argparse.Namespace) -> int:
    paths = context.paths
    current = _current_names(paths.server_cert)
    given = list(dict.fromkeys(args.server_name))
    dropped = [name for name in current if name not in given] if given else []
    if dropped and not args.force:
        keep = " ".join(f"--server-name {name}" for name in dict.fromkeys([*current, *given]))
        raise FailedPreconditionError(
            f"the new server certificate would drop {', '.join(dropped)} of the current one "
            f"({paths.server_cert}), and agents that dial those names would fail hostname verification; "
            f"name them all (`facefleet-server certs server {keep}`), or add --force to drop them"
        )
    names = given or current
    issued = certs.issue_server(
        paths.tls_dir, names, days=args.days, target=certs.Issued(paths.server_cert, paths.server_key)
    )
    if context.json_output:
        context.print_json(
            {
                "server": {"cert": str(issued.cert), "key": str(issued.key)},
                "names": list(issued.names),
                "serial": issued.serial,
                "not_after": issued.not_after.isoformat() if issued.not_after else None,
                "capped_by_ca": issued.capped,
            }
        )
        return EXIT_OK
    origin = "" if given else (" (the current certificate's)" if current else " (the defaults: none existed)")
    _show_files(
        context,
        {"server": {"cert": issued.cert, "key": issued.key}},
        f"certificate {issued.serial} for {', '.join(issued.names)}{origin}, {_valid_until(issued)}; "
        "`systemctl reload facefleet-server` (or SIGHUP to the server process) serves it to new connections",
    )
    return EXIT_OK


def _current_names(path: Path) -> list[str]:
    """The names of the server certificate at path; [] when there is none yet."""
    try:
        return certs.server_names(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ServerConfigError(
            f"server certificate {path}: cannot read its names ({exc}); name them with --server-name"
        ) from None


def _valid_until(issued: certs.Issued) -> str:
    assert issued.not_after is not None
    text = f"valid until {issued.not_after:%Y-%m-%d}"
    if issued.capped:
        text += (
            " (cut to the CA's own expiry: a certificate cannot outlive the CA that signed it; replace the "
            "CA before then, see the README's 'Replacing the site CA')"
        )
    return text


def _show_files(context: Context, files: dict[str, dict[str, Path]], note: str) -> None:
    if context.json_output:
        context.print_json(
            {name: {kind: str(path) for kind, path in paths.items()} for name, paths in files.items()}
        )
        return
    for name, paths in files.items():
        context.console.print(f"{name}: " + ", ".join(str(path) for path in paths.values()), markup=False)
    context.console.print(note, markup=False)


def _devices_list(context: Context, args: argparse.Namespace) -> int:
    if context.remote is not None:
        devices = context.remote.get(("devices",))["devices"]
    else:
        devices = [dump(DeviceOut.of(view)) for view in device_views(context.state)]
    if context.json_output:
        context.print_json(devices)
        return EXIT_OK
    if not devices:
        context.console.print("no devices yet; `facefleet-server certs issue DEVICE` adds one", markup=False)
        return EXIT_OK
    now = utc_now()
    table = Table()
    table.add_column("device", no_wrap=True)
    for column in ("status", "reason", "certificate", "expires", "last seen"):
        table.add_column(column, overflow="fold")
    for device in devices:
        current = [c for c in device["certificates"] if c["revoked_at"] is None]
        expires = device["certificate_expires"]
        table.add_row(
            device["device_id"],
            device["status"] + (" (wipe)" if device["wipe"] else ""),
            device["reason"],
            current[-1]["serial"][:16] if current else "-",
            _expiry(datetime.fromisoformat(expires) if expires else None, now),
            when(device["last_seen"], seconds=True) if device["last_seen"] else "-",
        )
    context.console.print(table)
    return EXIT_OK


def _devices_change(context: Context, args: argparse.Namespace) -> int:
    device_id = check_id("device id", args.device)
    wipe = getattr(args, "wipe", False)
    if context.remote is not None:
        body = {"reason": args.reason, "wipe": wipe}
        device = context.remote.post(("devices", device_id, args.action), body)
    else:
        with context.audited(f"devices.{args.action}", device_id):
            changed = change_device(
                context.state,
                device_id,
                args.action,
                reason=args.reason,
                who="local",
                now=utc_now(),
                wipe=wipe,
            )
        device = dump(DeviceOut.of(DeviceView(changed, None)))
    if context.json_output:
        context.print_json(device)
    else:
        told = "; it will be told to erase its gallery when it calls" if device["wipe"] else ""
        servers = "accept it again" if args.action == "enable" else "refuse it"
        context.console.print(
            f"device {device['device_id']} is now {device['status']}{told} (running servers {servers} within "
            f"fleet.poll_seconds)",
            markup=False,
        )
    return EXIT_OK


def _expiry(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    days = (moment - now).days
    if moment <= now:
        return f"{moment:%Y-%m-%d} (expired)"
    return f"{moment:%Y-%m-%d}" + (f" ({days} days left)" if days < EXPIRY_WARNING_DAYS else "")
