"""One device read from LibreNMS by a command (`track`, `release` of an untracked device), so
the command can refuse what the daemon would only find out later, in its recovery thread."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from alert_handler.config.table import Config


@dataclass(frozen=True)
class Lookup:
    """What LibreNMS said about a device: it exists (with its overwrite_ip and hostname), it
    does not (404), or it could not be asked (`error`)."""

    exists: bool | None  # None: LibreNMS could not be asked
    overwrite_ip: str | None = None
    hostname: str | None = None
    error: str | None = None
    held: tuple[str | None] | None = None  # on UNSUPERVISED_IP: the original LibreNMS holds


def lookup(cfg: Config, device_id: int) -> Lookup:
    """GET /devices/<id> with the daemon's settings (token, TLS, timeout, retries)."""
    # Imported when run: the LibreNMS client brings requests (and the daemon's wiring brings
    # paramiko and prometheus_client), which `status` and the other commands do without.
    from alert_handler.core.facts import DeviceNotFound, LibreNMSError
    from alert_handler.daemon import make_api
    from alert_handler.librenms.components import Components

    api = make_api(cfg)
    held = None
    try:
        info = api.get_device(device_id)
        if info.overwrite_ip == cfg.unsupervised_ip:
            with contextlib.suppress(LibreNMSError):  # only for what the command says
                held = Components(api).held(device_id)
    except DeviceNotFound:
        return Lookup(exists=False)
    except LibreNMSError as exc:
        return Lookup(exists=None, error=str(exc))
    finally:
        api.close()
    return Lookup(exists=True, overwrite_ip=info.overwrite_ip, hostname=info.hostname, held=held)
