"""Write what the probe found into the site file's wiring, and say what was left out.

Only identified units are written on their own. A guess (readings and
plausibility only) is written when the installer confirms it, with
``--choose UNIT=MODEL`` (which also corrects a wrong identification) or
``--accept-guesses``; an ambiguous or unknown unit only with ``--choose``.
Every unit left out is listed with the reason, so nothing is dropped
silently. The terminal's bus runs at one baud rate: units found at another
rate than most are left out with a note.

The site file may not exist yet (probe before provision): then it is
created with the wiring and bus settings only, and ``provision`` adds the
terminal id, broker and credentials while keeping them. A profile file the
wiring names that is not yet in the ``profiles/`` directory beside the site
file is copied there (as JSON), so ``flash`` takes it to the board.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from edge.installer import probe, profilefile, siteconfig
from edge.installer.errors import SiteConfigError, UsageError

# Wiring names by the kind of a profile's first point: leak1, pm2, th3, di4.
_PREFIX = {
    "leak": "leak",
    "power": "pm",
    "energy": "pm",
    "voltage": "pm",
    "temperature": "th",
    "humidity": "th",
    "contact": "di",
}


def _existing(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        site = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SiteConfigError("site file %s is unreadable; fix or move it away" % path) from err
    if not isinstance(site, dict):
        raise SiteConfigError("site file %s is not a JSON object" % path)
    return site


def choose_units(
    found: list[probe.Found],
    known: dict[str, dict[str, Any]],
    choose: dict[int, str],
    accept_guesses: bool,
) -> tuple[list[tuple[probe.Found, str]], list[str]]:
    """``([(unit found, model to wire)], [lines about each decision])``."""
    by_unit = {f.unit: f for f in found}
    for unit, model in choose.items():
        if model not in known:
            raise UsageError(
                "--choose %d=%s: no such profile (%s)" % (unit, model, ", ".join(known))
            )
        if unit not in by_unit:
            raise UsageError("--choose %d=%s: unit %d did not answer" % (unit, model, unit))
    picked: list[tuple[probe.Found, str]] = []
    lines: list[str] = []
    for hit in found:
        said = probe.describe(hit)
        if hit.unit in choose:
            model = choose[hit.unit]
            picked.append((hit, model))
            lines.append("unit %d: %s, as you chose (the probe said: %s)" % (hit.unit, model, said))
        elif hit.verdict == probe.IDENTIFIED:
            picked.append((hit, hit.model))
        elif hit.verdict == probe.GUESS and accept_guesses:
            picked.append((hit, hit.model))
            lines.append(
                "unit %d: %s written as a guess (--accept-guesses)" % (hit.unit, hit.model)
            )
        elif hit.verdict in (probe.GUESS, probe.AMBIGUOUS):
            lines.append(
                "unit %d not written: %s; confirm with --choose %d=%s"
                % (hit.unit, said, hit.unit, hit.model)
            )
        else:
            lines.append("unit %d not written: %s" % (hit.unit, said))
    return picked, lines


def write(
    site_path: Path,
    found: list[probe.Found],
    extra: list[siteconfig.SiteProfile],
    *,
    parity: str = "N",
    choose: dict[int, str] | None = None,
    accept_guesses: bool = False,
) -> list[str]:
    """Merge the chosen units into the site file's wiring; return what to tell the installer.

    Raises UsageError for a bad ``choose`` and SiteConfigError when the
    result would not be a usable site file.
    """
    site_path = Path(site_path)
    known = profilefile.catalogue([p.full for p in extra])
    picked, lines = choose_units(found, known, choose or {}, accept_guesses)
    if not picked:
        lines.append("%s not changed: no unit to wire" % site_path)
        return lines
    rates = Counter(hit.baud for hit, _ in picked)
    baud = max(rates, key=lambda r: (rates[r], -r))
    for hit, model in picked:
        if hit.baud != baud:
            lines.append(
                "unit %d (%s) not written: it answers at %d baud and the bus runs at %d; set the "
                "device to %d baud or wire it to another terminal"
                % (hit.unit, model, hit.baud, baud, baud)
            )
    picked = [(hit, model) for hit, model in picked if hit.baud == baud]

    site = _existing(site_path)
    given = site.get("wiring")
    wiring: list[Any] = given if isinstance(given, list) else []
    entries = {e.get("unit"): dict(e) for e in wiring if isinstance(e, dict)}
    names = {e.get("name") for e in entries.values()}
    for hit, model in picked:
        entry = entries.get(hit.unit, {"unit": hit.unit})
        entry.pop("model", None)
        entry["profile"] = model
        if not entry.get("name"):
            kind = known[model]["points"][0]["kind"]
            name = "%s%d" % (_PREFIX.get(kind, "u"), hit.unit)
            while name in names:
                name += "x"
            entry["name"] = name
            names.add(name)
        entries[hit.unit] = entry
        lines.append("wired unit %d: %s as %s" % (hit.unit, model, entry["name"]))
    site["wiring"] = [
        entries[u] for u in sorted(entries, key=lambda u: (not isinstance(u, int), u))
    ]
    given = site.get("bus")
    bus: dict[str, Any] = given if isinstance(given, dict) else {}
    bus.update({"baud": baud, "parity": parity})
    site["bus"] = bus

    used = {model for _, model in picked}
    target = siteconfig.profile_dir(site_path)
    for p in extra:
        if p.model in used and p.path.parent.resolve() != target.resolve():
            target.mkdir(parents=True, exist_ok=True)
            dest = target / (p.model + ".json")
            dest.write_bytes(profilefile.board_json(p.raw) + b"\n")
            lines.append("copied profile %s to %s" % (p.path, dest))
    missing = [k for k in siteconfig.REQUIRED_KEYS if k not in site]
    if missing:
        lines.append(
            "%s is not complete yet (no %s): 'mimamori-install provision' completes it and "
            "keeps the wiring" % (site_path, ", ".join(missing))
        )
    else:
        siteconfig.check(
            site, str(site_path), siteconfig.site_profiles(site_path, [p.path for p in extra])
        )
    siteconfig.write(site_path, site)
    lines.append("wrote %s: %d devices at %d baud" % (site_path, len(site["wiring"]), baud))
    return lines
