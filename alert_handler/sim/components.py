"""The device component routes as LibreNMS 26.7 answers them (routes/api.php,
api_functions.inc.php get/add/edit/delete_components, LibreNMS/Component.php, app/Models/
Component.php and ComponentPref.php), traps included: no `components` key when there are none,
POST answers nulls, PUT edits by id whatever device the URL names and deletes every attribute it
does not send, null is stored as "", DELETE of a missing id answers 500. Every change the
source writes to the device's Eventlog is appended to `Database.eventlog`.

Pure functions over the `Database`; the caller holds the lock.
"""

from __future__ import annotations

import json
import re
from typing import Any

from alert_handler.sim.tables import COMPONENT_FILLABLE, COMPONENT_RESERVED, Database, SimComponent

_FILTERS = ("device_id", "type", "id", "label", "status", "disabled", "ignore", "error")
_INT_COLUMNS = ("device_id", "id", "status", "disabled", "ignore")


class ComponentError(Exception):
    """A route's failure: `status` and LibreNMS's `message` (None: an uncaught PHP error)."""

    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(message or "Server Error")
        self.status = status
        self.message = message


def php_int(value: Any) -> int:
    """PHP's (int) cast: leading digits of a string, 0 for none, 1 for true."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = re.match(r"\s*([+-]?\d+)", value if isinstance(value, str) else "")
    return int(match.group(1)) if match else 0


def php_string(value: Any) -> str:
    """ComponentPref::setValueAttribute: an array as JSON, anything else PHP's (string)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _device_id(db: Database, spec: str) -> int | None:
    """ctype_digit: a device_id as given (never checked); else getidbyname (None if unknown)."""
    if spec.isascii() and spec.isdigit():
        return int(spec)
    row = db.find_device(spec)
    return None if row is None else int(row["device_id"])


def _matches(comp: SimComponent, name: str, wanted: str, op: str) -> bool:
    """One `where(field, op, value)` under MySQL's rules: numbers compared as numbers, strings
    case-insensitively; a NULL column matches nothing."""
    value: Any = comp.component_id if name == "id" else getattr(comp, name)
    if value is None:
        return False
    if name in _INT_COLUMNS:
        return int(value) == php_int(wanted)
    if op == "LIKE":
        return wanted.casefold() in str(value).casefold()
    return str(value).casefold().rstrip(" ") == wanted.casefold().rstrip(" ")


def get_components(db: Database, spec: str, params: dict[str, str]) -> dict[str, Any] | None:
    """GET /devices/{h}/components: the device's components keyed by id (every query key an `=`
    filter, `label` LIKE); None when it has none (the answer then has no `components` key)."""
    device_id = _device_id(db, spec)
    filters = {k: (("LIKE" if k == "label" else "="), v) for k, v in params.items()}
    found = {}
    for cid, comp in sorted(db.components.items()):
        if device_id is None or comp.device_id != device_id:
            continue
        if all(_matches(comp, k, v, op) for k, (op, v) in filters.items() if k in _FILTERS):
            found[str(cid)] = comp.shown()
    return found or None


def add_component(db: Database, spec: str, kind: str) -> dict[str, Any]:
    """POST /devices/{h}/components/{type}: a new component (the device is not checked to
    exist; the type cut to 50 characters), answered with nulls but for its type."""
    device_id = _device_id(db, spec)
    if device_id is None:
        raise ComponentError(500, None)  # device_id NOT NULL: an uncaught query exception
    cid = db.next_component_id
    db.next_component_id += 1
    comp = SimComponent(cid, device_id, kind[:50])
    db.components[cid] = comp
    nulls = dict.fromkeys(COMPONENT_RESERVED)
    nulls["type"] = comp.type
    return {str(cid): nulls}


def edit_components(db: Database, spec: str, body: bytes) -> None:
    """PUT /devices/{h}/components `{"<id>": {...}}`: Component::setComponentPrefs. Each named
    component is edited whatever its device; reserved fields fill the row (type cannot change);
    every other key becomes an attribute stored as a string, and attributes not sent are
    deleted. The URL's device is used only for the Eventlog line of a modified attribute."""
    url_device = _device_id(db, spec)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, list):
        data = dict(enumerate(data))
    elif not isinstance(data, dict):
        data = {} if data is None else {0: data}
    wanted: dict[int, Any] = {}
    for key, value in data.items():
        text = str(key)
        if text.isascii() and text.isdigit():
            wanted[int(text)] = value
    for cid in sorted(wanted):
        comp = db.components.get(cid)
        if comp is None:
            continue
        update = wanted[cid]
        if not isinstance(update, dict):
            raise ComponentError(500, None)  # unset($update['type']) on a scalar: a PHP Error
        _fill(db, comp, update)
        _prefs(db, comp, update, url_device)


def _fill(db: Database, comp: SimComponent, update: dict[str, Any]) -> None:
    dirty = []
    for name in COMPONENT_FILLABLE:
        if name not in update:
            continue
        value = update[name]
        if name in ("status", "disabled", "ignore", "device_id"):
            new: Any = php_int(value)
        else:
            new = None if value is None else php_string(value)[:255]
        if new != getattr(comp, name):
            setattr(comp, name, new)
            dirty.append(f"{name} => {php_string(new)}")
    if dirty:
        message = f"Component {comp.component_id} has been modified: " + ",".join(dirty)
        db.eventlog.append((comp.device_id, message))


def _prefs(
    db: Database, comp: SimComponent, update: dict[str, Any], url_device: int | None
) -> None:
    name = f"Component: {comp.type}({comp.component_id})."
    sent = {k: php_string(v) for k, v in update.items() if k not in COMPONENT_RESERVED}
    for attribute, value in sent.items():
        old = comp.prefs.get(attribute)
        if old is None:
            comp.prefs[attribute] = value
            line = f"{name} Attribute: {attribute}, was added with value: {value}"
            db.eventlog.append((comp.device_id, line))
        elif old != value:
            comp.prefs[attribute] = value
            line = f"{name} Attribute: {attribute}, was modified from: {old}, to: {value}"
            db.eventlog.append((url_device, line))
    for attribute in [a for a in comp.prefs if a not in sent]:
        del comp.prefs[attribute]
        db.eventlog.append((comp.device_id, f"{name} Attribute: {attribute}, was deleted."))


def delete_component(db: Database, raw_id: str) -> None:
    """DELETE /devices/{h}/components/{id}: Component::destroy($id), whatever the device; a
    missing id is 500 "Components could not be deleted." (MySQL reads "17abc" as 17)."""
    match = re.match(r"\s*(\d+)", raw_id)
    cid = int(match.group(1)) if match else 0
    if db.components.pop(cid, None) is None:
        raise ComponentError(500, "Components could not be deleted.")
