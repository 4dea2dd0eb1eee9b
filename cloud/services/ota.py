"""Over-the-air updates: bundles, rollouts in waves, progress, chunks.

docs/ota.md is the contract. Only operators upload bundles and start,
pause, resume or cancel rollouts (:data:`OPERATORS`); each of these is
audited, automatic pauses as ``system``.

- :func:`upload_bundle` checks an archive made by ``mimamori-install sign``
  (safe tar, every file against the manifest, the size limit, the Ed25519
  signature against the operator's public keys) and stores it.
- :func:`start_rollout` plans the waves; :func:`advance` (run every few
  seconds by the ingest worker, :mod:`cloud.ingest.ota`) offers each wave's
  terminals the ``ota`` command once they are online (again after
  REOFFER_S without an answer), marks silent ones failed after the stall
  time, and moves on to the next wave, or pauses the rollout when a
  finished wave failed more than its threshold.
- :func:`record_status` stores a terminal's ``otastat`` report (the ingest,
  in its batch transaction); :func:`chunk_frame` answers an ``otareq``, and
  :func:`withdrawal` tells a terminal asking for a job that was cancelled or
  ended to stop (the ``ota_cancel`` command, as a cancel does).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cloud.models import Connectivity, Role, Terminal, TerminalCommand
from cloud.models.commands import DELIVERED, FAILED, QUEUED
from cloud.models.ota import (
    CANCELLED,
    DONE,
    OFFERED,
    PAUSED,
    PENDING,
    RUNNING,
    OtaBundle,
    OtaBundleFile,
    OtaRollout,
    OtaTarget,
)
from cloud.services import audit
from cloud.services.commands import command_frame
from cloud.services.errors import N_, Forbidden, Invalid, NotFound, PublishError
from cloud.services.publisher import Publisher
from cloud.services.scope import Viewer
from protocol import frames, ota, topics
from protocol.errors import ProtocolError
from protocol.limits import MAX_CHUNK, MAX_STR

OPERATORS = (Role.OPERATOR,)
MAX_BUNDLE_BYTES = 768 * 1024  # files a terminal stages; docs/ota.md, flash budget
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024  # an upload larger than this is refused unread
DEFAULT_WAVES = "1,10%,100%"
DEFAULT_THRESHOLD_PCT = 20
DEFAULT_CONFIRM_S = 300
DEFAULT_STALL_S = 900
SYSTEM = "system"
FINAL = ota.FINAL
FAILING = (ota.FAILED, ota.ROLLED_BACK)
ACTIVE_ROLLOUT = (RUNNING, PAUSED)
# An offer unanswered this long goes again (the terminal may have been
# reconnecting; it accepts the same job once).
REOFFER_S = 30


# -- bundles ------------------------------------------------------------------


def read_archive(data: bytes) -> dict[str, bytes]:
    """The files of an upload archive; :class:`Invalid` for anything but a
    plain tar of regular files with safe relative names."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise Invalid(N_("The archive is larger than %(limit)d bytes."), limit=MAX_ARCHIVE_BYTES)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                name = member.name
                parts = name.split("/")
                if (
                    not member.isfile()
                    or name.startswith("/")
                    or ".." in parts
                    or "" in parts
                    or len(name.encode()) > MAX_STR
                ):
                    raise Invalid(N_("The archive holds a bad entry: %(name)s"), name=name[:80])
                if name in files:
                    raise Invalid(N_("The archive holds %(name)s twice."), name=name)
                fp = tar.extractfile(member)
                assert fp is not None  # a regular file
                files[name] = fp.read()
    except (tarfile.TarError, EOFError) as err:
        raise Invalid(N_("Not a bundle archive (tar): %(error)s"), error=str(err)) from err
    return files


def check_bundle(files: dict[str, bytes], trusted: list[str]) -> tuple[dict[str, Any], str]:
    """``(manifest, signing key)`` of an archive's files; :class:`Invalid`
    naming the first problem: manifest, files, size, signature."""
    try:
        manifest = json.loads(files[ota.MANIFEST])
        entries = manifest["files"]
        sig = json.loads(files[ota.SIG])
        assert isinstance(entries, dict) and isinstance(sig, dict)
    except (KeyError, ValueError, TypeError, AssertionError) as err:
        raise Invalid(
            N_("The archive has no readable manifest.json and manifest.sig (made by sign).")
        ) from err
    listed = set(entries)
    present = set(files) - {ota.MANIFEST, ota.SIG}
    if listed != present:
        raise Invalid(
            N_("Files and manifest differ: %(names)s"),
            names=", ".join(sorted(listed ^ present))[:200],
        )
    for path, entry in sorted(entries.items()):
        data = files[path]
        if (
            not isinstance(entry, dict)
            or entry.get("size") != len(data)
            or entry.get("sha256") != hashlib.sha256(data).hexdigest()
        ):
            raise Invalid(N_("%(path)s does not match the manifest."), path=path)
    if ota.KEYS not in entries:
        raise Invalid(
            N_("The bundle trusts no key (%(file)s): terminals could never be updated again."),
            file=ota.KEYS,
        )
    size = sum(len(d) for p, d in files.items() if p != ota.LOADER)
    if size > MAX_BUNDLE_BYTES:
        raise Invalid(
            N_("The bundle is %(size)d bytes; terminals stage at most %(limit)d."),
            size=size,
            limit=MAX_BUNDLE_BYTES,
        )
    key = str(sig.get("key", "")).lower()
    if sig.get("alg") != "ed25519" or key not in trusted:
        raise Invalid(N_("Signed by a key that is not in MIMAMORI_OTA_KEYS."))
    try:
        VerifyKey(bytes.fromhex(key)).verify(
            ota.signed_message(hashlib.sha256(files[ota.MANIFEST]).digest()),
            bytes.fromhex(str(sig.get("sig", ""))),
        )
    except (BadSignatureError, ValueError) as err:
        raise Invalid(N_("Bad signature: the manifest was changed after signing.")) from err
    return manifest, key


def upload_bundle(
    session: Session,
    viewer: Viewer,
    data: bytes,
    *,
    trusted_keys: list[str],
    now: datetime,
    ip: str | None,
) -> OtaBundle:
    """Check and store an uploaded bundle archive; return its row (committed).

    Forbidden unless an operator; Invalid when the archive fails a check (the
    reason in the message; nothing is stored) or was uploaded before.
    """
    if viewer.role not in OPERATORS:
        raise Forbidden("only operators upload firmware")
    files = read_archive(data)
    manifest, key = check_bundle(files, [k.lower() for k in trusted_keys])
    bundle_id = str(manifest.get("bundle_id", ""))
    if session.scalar(sa.select(OtaBundle.id).where(OtaBundle.bundle_id == bundle_id)):
        raise Invalid(N_("This bundle was uploaded before."))
    fetched = [p for p in files if p != ota.LOADER]
    bundle = OtaBundle(
        bundle_id=bundle_id[:64],
        version=str(manifest.get("firmware_version", ""))[:MAX_STR],
        mpy_version=str(manifest.get("mpy_version", ""))[:16],
        size=sum(len(files[p]) for p in fetched),
        files=len(fetched),
        signed_by=key,
        uploaded_at=now,
        uploaded_by=viewer.email[:254],
        uploaded_by_user_id=viewer.user_id,
    )
    session.add(bundle)
    session.flush()
    for path, content in files.items():
        session.add(
            OtaBundleFile(
                bundle_pk=bundle.id,
                path=path,
                sha256=hashlib.sha256(content).hexdigest(),
                size=len(content),
                data=content,
            )
        )
    audit.record(
        session,
        viewer,
        "ota.bundle.upload",
        "ota_bundle",
        bundle.id,
        at=now,
        ip=ip,
        details={"bundle_id": bundle_id, "version": bundle.version, "signed_by": key},
    )
    session.commit()
    return bundle


def bundles(session: Session, viewer: Viewer) -> list[OtaBundle]:
    _operators_only(viewer)
    return list(session.scalars(sa.select(OtaBundle).order_by(OtaBundle.id.desc())))


# -- rollouts -----------------------------------------------------------------


def parse_waves(text: str) -> list[str]:
    """``"1,10%,100%"`` -> ``["1", "10%", "100%"]``; each a count or a percentage
    of all targets, reached (cumulatively) at the end of that wave."""
    waves = [w.strip() for w in str(text).split(",") if w.strip()]
    for w in waves:
        number = w[:-1] if w.endswith("%") else w
        if not number.isdigit() or int(number) < 1 or (w.endswith("%") and int(number) > 100):
            raise Invalid(N_("Waves are counts or percentages, like 1,10%,100%."))
    if not waves or len(waves) > 10:
        raise Invalid(N_("Give 1 to 10 waves, like 1,10%,100%."))
    return waves


def wave_of_each(n: int, waves: list[str]) -> list[int]:
    """The wave (0-based) of each of ``n`` targets, in order. The last wave
    takes whatever is left; a wave that would add nobody is skipped."""
    out: list[int] = []
    wave = 0
    for w in waves:
        reach = math.ceil(n * int(w[:-1]) / 100) if w.endswith("%") else int(w)
        reach = min(reach, n)
        if reach > len(out):
            out += [wave] * (reach - len(out))
            wave += 1
    out += [wave] * (n - len(out))
    return out


def start_rollout(
    session: Session,
    viewer: Viewer,
    *,
    bundle_pk: int,
    terminal_ids: list[str] | None = None,
    customer_id: int | None = None,
    waves: str = DEFAULT_WAVES,
    threshold_pct: int = DEFAULT_THRESHOLD_PCT,
    confirm_s: int = DEFAULT_CONFIRM_S,
    stall_s: int = DEFAULT_STALL_S,
    now: datetime,
    ip: str | None,
) -> OtaRollout:
    """Create a running rollout of ``bundle_pk`` to the listed terminals or all
    of a customer's (committed); the first wave is offered by :func:`advance`.

    Invalid: no such bundle or terminal, no target, bad waves or numbers, a
    terminal already in another active rollout.
    """
    _operators_only(viewer)
    bundle = session.get(OtaBundle, bundle_pk)
    if bundle is None:
        raise NotFound(f"bundle {bundle_pk}")
    plan = parse_waves(waves)
    if not 0 <= threshold_pct <= 100:
        raise Invalid(N_("The failure threshold is a percentage, 0 to 100."))
    if not 10 <= confirm_s <= 86400:
        raise Invalid(N_("The confirmation deadline is 10 s to one day."))
    stall_s = max(stall_s, confirm_s + 60)  # a switch takes its confirm time and a boot
    ids = _targets(session, terminal_ids, customer_id)
    busy = session.scalars(
        sa.select(OtaTarget.terminal_id)
        .join(OtaRollout, OtaRollout.id == OtaTarget.rollout_id)
        .where(
            OtaTarget.terminal_id.in_(ids),
            OtaRollout.state.in_(ACTIVE_ROLLOUT),
            OtaTarget.state.not_in(FINAL),
        )
    ).all()
    if busy:
        raise Invalid(
            N_("Already in an active rollout: %(ids)s"), ids=", ".join(sorted(set(busy))[:10])
        )
    rollout = OtaRollout(
        bundle_pk=bundle.id,
        state=RUNNING,
        waves=plan,
        wave=0,
        threshold_pct=threshold_pct,
        confirm_s=confirm_s,
        stall_s=stall_s,
        reason="",
        created_at=now,
        created_by=viewer.email[:254],
        created_by_user_id=viewer.user_id,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    for tid, wave in zip(ids, wave_of_each(len(ids), plan), strict=True):
        session.add(OtaTarget(rollout_id=rollout.id, terminal_id=tid, wave=wave, state=PENDING))
    audit.record(
        session,
        viewer,
        "ota.rollout.start",
        "ota_rollout",
        rollout.id,
        at=now,
        ip=ip,
        details={
            "bundle_id": bundle.bundle_id,
            "version": bundle.version,
            "terminals": len(ids),
            "waves": plan,
            "threshold_pct": threshold_pct,
        },
    )
    session.commit()
    return rollout


def _targets(
    session: Session, terminal_ids: list[str] | None, customer_id: int | None
) -> list[str]:
    if terminal_ids:
        wanted = sorted({t.strip() for t in terminal_ids if t.strip()})
        found = set(session.scalars(sa.select(Terminal.id).where(Terminal.id.in_(wanted))))
        missing = [t for t in wanted if t not in found]
        if missing:
            raise Invalid(N_("No such terminal: %(ids)s"), ids=", ".join(missing[:10]))
        return wanted
    if customer_id is not None:
        ids = list(
            session.scalars(
                sa.select(Terminal.id)
                .where(Terminal.customer_id == customer_id)
                .order_by(Terminal.id)
            )
        )
        if ids:
            return ids
    raise Invalid(N_("Choose the terminals: a list of ids, or a customer."))


def set_state(
    session: Session,
    viewer: Viewer,
    rollout_id: int,
    action: str,
    *,
    now: datetime,
    ip: str | None,
    publisher: Publisher | None = None,
) -> OtaRollout:
    """``pause``, ``resume`` (the next wave) or ``cancel`` a rollout; audited, committed.

    A cancel ends every target that has not switched yet: pending ones and
    those offered, downloading or verifying become ``failed`` ("cancelled
    by <operator>"), and the ones that were offered something are sent the
    ``ota_cancel`` command through ``publisher`` after the commit, so they
    stop downloading and remove what they staged (a terminal that misses it,
    being offline, is told again when it next asks for a chunk:
    :func:`withdrawal`). Installed targets are left alone: their new copy
    confirms or rolls back by itself, and they report which.
    """
    _operators_only(viewer)
    rollout = session.get(OtaRollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id}")
    allowed = {"pause": (RUNNING,), "resume": (PAUSED,), "cancel": ACTIVE_ROLLOUT}
    if action not in allowed:
        raise Invalid(N_("Unknown action %(action)s."), action=action)
    if rollout.state not in allowed[action]:
        raise Invalid(N_("The rollout is %(state)s."), state=rollout.state)
    if action == "pause":
        rollout.state = PAUSED
        rollout.reason = "paused by %s" % viewer.email
    elif action == "resume":
        rollout.state = RUNNING
        rollout.reason = ""
        if _wave_finished(session, rollout):
            rollout.wave += 1
    else:
        rollout.state = CANCELLED
        stop = _cancel_targets(session, rollout, viewer, now)
    rollout.updated_at = now
    audit.record(session, viewer, "ota.rollout." + action, "ota_rollout", rollout.id, at=now, ip=ip)
    session.commit()
    if action == "cancel" and publisher is not None:
        for target in stop:
            _send_cancel(
                session, target, publisher, now, by=viewer.email, by_user_id=viewer.user_id
            )
    return rollout


def _cancel_targets(
    session: Session, rollout: OtaRollout, viewer: Viewer, now: datetime
) -> list[OtaTarget]:
    """Mark the cancelled rollout's unswitched targets failed; those that were
    offered the update (and must be told to stop)."""
    told = []
    for t in _all_targets(session, rollout):
        if t.state in FINAL or t.state == ota.INSTALLED:
            continue
        if t.state != PENDING:
            told.append(t)
        t.state = ota.FAILED
        t.reason = ("cancelled by %s" % viewer.email)[:255]
        t.updated_at = now
    return told


def _all_targets(session: Session, rollout: OtaRollout) -> list[OtaTarget]:
    return list(session.scalars(sa.select(OtaTarget).where(OtaTarget.rollout_id == rollout.id)))


def _send_cancel(
    session: Session,
    target: OtaTarget,
    publisher: Publisher,
    now: datetime,
    *,
    by: str,
    by_user_id: int | None,
) -> TerminalCommand:
    """The ``ota_cancel`` command for ``target``'s job (a command row, visible
    on the terminal's page, with the terminal's answer); committed. A broker
    that refuses it leaves the row failed: the terminal hears it at its next
    chunk request (:func:`withdrawal`)."""
    args = {"job": target.id}
    command = TerminalCommand(
        terminal_id=target.terminal_id,
        name="ota_cancel",
        args=args,
        state=QUEUED,
        requested_at=now,
        requested_by=by[:254],
        requested_by_user_id=by_user_id,
        expires_at=now + timedelta(seconds=REOFFER_S),
        error="",
    )
    session.add(command)
    session.commit()
    try:
        publisher.publish(
            topics.downlink(target.terminal_id, "cmd"),
            command_frame(target.terminal_id, command.id, "ota_cancel", args, now),
            retain=False,
            qos=1,
        )
    except PublishError as err:
        command.state = FAILED
        command.error = f"the broker did not take it: {err}"[:500]
    else:
        if command.state == QUEUED:
            command.state = DELIVERED
            command.delivered_at = now
    session.commit()
    return command


def withdrawal(
    session: Session, terminal_id: str, job: int, publisher: Publisher, now: datetime
) -> TerminalCommand | None:
    """A chunk request for a job the cloud no longer serves: its rollout was
    cancelled, or the target ended (failed after a stall, say) while the
    terminal, offline meanwhile, kept the download on its flash. Sends the
    terminal ``ota_cancel`` so it stops asking; None (nothing sent) when the
    job is not this terminal's or is still served. The caller limits how
    often it asks (a terminal repeats a request every few seconds)."""
    target = session.get(OtaTarget, job) if job > 0 else None
    if target is None or target.terminal_id != terminal_id:
        return None
    rollout = session.get(OtaRollout, target.rollout_id)
    if rollout is None:
        return None
    if target.state not in FINAL and rollout.state != CANCELLED:
        return None
    return _send_cancel(session, target, publisher, now, by=SYSTEM, by_user_id=None)


def rollouts(session: Session, viewer: Viewer, limit: int = 50) -> list[OtaRollout]:
    _operators_only(viewer)
    return list(session.scalars(sa.select(OtaRollout).order_by(OtaRollout.id.desc()).limit(limit)))


def rollout_detail(
    session: Session, viewer: Viewer, rollout_id: int
) -> tuple[OtaRollout, OtaBundle, list[OtaTarget]]:
    _operators_only(viewer)
    rollout = session.get(OtaRollout, rollout_id)
    if rollout is None:
        raise NotFound(f"rollout {rollout_id}")
    bundle = session.get(OtaBundle, rollout.bundle_pk)
    assert bundle is not None
    targets = list(
        session.scalars(
            sa.select(OtaTarget)
            .where(OtaTarget.rollout_id == rollout.id)
            .order_by(OtaTarget.wave, OtaTarget.terminal_id)
        )
    )
    return rollout, bundle, targets


def counts(targets: list[OtaTarget]) -> dict[str, int]:
    """How many targets are in each state."""
    out: dict[str, int] = {}
    for t in targets:
        out[t.state] = out.get(t.state, 0) + 1
    return out


def _operators_only(viewer: Viewer) -> None:
    if viewer.role not in OPERATORS:
        raise Forbidden("only operators manage firmware updates")


# -- the driver ---------------------------------------------------------------


def advance(session: Session, publisher: Publisher, now: datetime) -> int:
    """Drive every running rollout one step; return how many targets changed.

    Commits after each rollout. Offers go out after the commit that records
    them as ``offered`` (a broker that refuses marks them failed), so a crash
    between the two only delays an offer until the stall time.

    One driver at a time is the caller's job (the ingest's lease). As a
    second fence every transition here is a conditional UPDATE on what this
    pass read (a target's state and times, a rollout's state and wave): if
    another driver or a terminal's report changed the row meanwhile, the
    transition is skipped, so no offer is sent twice and no pause audited
    twice even by two overlapping drivers.
    """
    changed = 0
    ids = list(session.scalars(sa.select(OtaRollout.id).where(OtaRollout.state == RUNNING)))
    for rid in ids:
        rollout = session.get(OtaRollout, rid)
        if rollout is None or rollout.state != RUNNING:
            continue
        changed += _advance_one(session, rollout, publisher, now)
    return changed


def _advance_one(session: Session, rollout: OtaRollout, publisher: Publisher, now: datetime) -> int:
    bundle = session.get(OtaBundle, rollout.bundle_pk)
    assert bundle is not None
    changed = 0
    while True:
        wave = _wave(session, rollout)
        if not wave:  # past the last wave
            _move_rollout(session, rollout, state=DONE, updated_at=now)
            session.commit()
            return changed
        stall = now - timedelta(seconds=rollout.stall_s)
        online = _online(session, [t.terminal_id for t in wave if t.state in (PENDING, OFFERED)])
        offers = []
        for t in wave:
            last = t.updated_at or t.offered_at or rollout.updated_at
            if t.state not in FINAL and last < stall:
                why = "offline for %d s" if t.state == PENDING else "no progress for %d s"
                if _move_target(
                    session,
                    t,
                    _seen(t),
                    state=ota.FAILED,
                    reason=why % rollout.stall_s,
                    updated_at=now,
                ):
                    changed += 1
            elif t.terminal_id in online and (
                t.state == PENDING
                or (
                    t.state == OFFERED
                    and t.offered_at is not None
                    and t.offered_at < now - timedelta(seconds=REOFFER_S)
                )
            ):
                offers.append((t, _seen(t)))
        if offers:
            for t, seen in offers:
                changed += _offer(session, rollout, bundle, t, seen, publisher=publisher, now=now)
            session.commit()
            return changed
        if any(t.state not in FINAL for t in wave):
            session.commit()
            return changed
        failing = sum(1 for t in wave if t.state in FAILING)
        if failing * 100 > rollout.threshold_pct * len(wave):
            reason = "wave %d: %d of %d failed (threshold %d %%)" % (
                rollout.wave + 1,
                failing,
                len(wave),
                rollout.threshold_pct,
            )
            if not _move_rollout(session, rollout, state=PAUSED, reason=reason, updated_at=now):
                session.commit()  # paused, cancelled or moved on by someone else
                return changed
            audit.record(
                session,
                None,
                "ota.rollout.pause",
                "ota_rollout",
                rollout.id,
                at=now,
                ip=None,
                actor=SYSTEM,
                details={"reason": rollout.reason},
            )
            session.commit()
            return changed
        if not _move_rollout(session, rollout, wave=rollout.wave + 1, updated_at=now):
            session.commit()
            return changed


Seen = tuple[str, datetime | None, datetime | None]


def _seen(target: OtaTarget) -> Seen:
    """What a transition of ``target`` was decided on: its state and times."""
    return (target.state, target.updated_at, target.offered_at)


def _move_target(session: Session, target: OtaTarget, seen: Seen, **values: Any) -> bool:
    """Set ``values`` on ``target`` if its row still has the state and times
    ``seen`` (a conditional UPDATE, in the session's transaction); False, and
    ``target`` expired, when another driver or the terminal's own report
    changed it first."""
    T = OtaTarget
    state, updated_at, offered_at = seen
    where = (
        T.id == target.id,
        T.state == state,
        _same(T.updated_at, updated_at),
        _same(T.offered_at, offered_at),
    )
    return _move(session, target, sa.update(T).where(*where), values)


def _move_rollout(session: Session, rollout: OtaRollout, **values: Any) -> bool:
    """As :func:`_move_target`, for a rollout still running the wave this pass read."""
    R = OtaRollout
    seen = (R.state == RUNNING, R.wave == rollout.wave)
    return _move(session, rollout, sa.update(R).where(R.id == rollout.id, *seen), values)


def _move(session: Session, row: Any, update: Any, values: dict[str, Any]) -> bool:
    # The UPDATE waits for a concurrent writer's row lock, then re-checks its
    # WHERE (PostgreSQL, read committed; SQLite has one writer at a time).
    done = session.execute(
        update.values(**values).returning(sa.literal(1)),
        execution_options={"synchronize_session": False},
    ).first()
    if done is None:
        session.expire(row)
        return False
    for key, value in values.items():
        set_committed_value(row, key, value)
    return True


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


def _online(session: Session, ids: list[str]) -> set[str]:
    """Those of ``ids`` that are online: commands reach only a connected
    terminal (clean sessions), so offers wait for its birth."""
    if not ids:
        return set()
    return set(
        session.scalars(
            sa.select(Terminal.id).where(
                Terminal.id.in_(ids), Terminal.connectivity == Connectivity.ONLINE
            )
        )
    )


def _wave(session: Session, rollout: OtaRollout) -> list[OtaTarget]:
    return list(
        session.scalars(
            sa.select(OtaTarget).where(
                OtaTarget.rollout_id == rollout.id, OtaTarget.wave == rollout.wave
            )
        )
    )


def _wave_finished(session: Session, rollout: OtaRollout) -> bool:
    return all(t.state in FINAL for t in _wave(session, rollout))


def _offer(
    session: Session,
    rollout: OtaRollout,
    bundle: OtaBundle,
    target: OtaTarget,
    seen: Seen,
    *,
    publisher: Publisher,
    now: datetime,
) -> int:
    """Send the ``ota`` command to one target: a command row (visible on the
    terminal's page) and the target ``offered``. 1 if sent, 0 when the target
    changed since this pass read it (another driver offered it)."""
    args = {
        "job": target.id,
        "bundle": bundle.bundle_id,
        "version": bundle.version,
        "size": bundle.size,
        "files": bundle.files,
        "confirm_s": rollout.confirm_s,
    }
    if not _move_target(
        session, target, seen, state=OFFERED, offered_at=now, updated_at=now, total=bundle.size
    ):
        return 0
    command = TerminalCommand(
        terminal_id=target.terminal_id,
        name="ota",
        args=args,
        state=QUEUED,
        requested_at=now,
        requested_by=rollout.created_by,
        requested_by_user_id=rollout.created_by_user_id,
        expires_at=now + timedelta(seconds=rollout.stall_s),
        error="",
    )
    session.add(command)
    session.flush()
    target.command_id = command.id
    session.commit()
    try:
        publisher.publish(
            topics.downlink(target.terminal_id, "cmd"),
            command_frame(target.terminal_id, command.id, "ota", args, now),
            retain=False,
            qos=1,
        )
    except PublishError as err:
        command.state = FAILED
        command.error = f"the broker did not take it: {err}"[:500]
        target.state = ota.FAILED
        target.reason = command.error[:255]
    else:
        if command.state == QUEUED:
            command.state = DELIVERED
            command.delivered_at = now
    session.commit()
    return 1


# -- from the terminals -------------------------------------------------------


def record_status(
    session: Session, terminal_id: str, frame: dict[str, Any], at: datetime
) -> OtaTarget | None:
    """A terminal's ``otastat``: its target's state, progress and reason. For
    the ingest, in its batch transaction (the caller commits). None when the
    job is not this terminal's; a late report never undoes a final state."""
    target = session.get(OtaTarget, frame["job"]) if frame["job"] > 0 else None
    if target is None or target.terminal_id != terminal_id:
        return None
    state = frame["state"]
    if state not in ota.STATES or (target.state in FINAL and state not in FINAL):
        return target
    target.state = state
    target.done = frame["done"]
    target.total = frame["total"] or target.total
    target.reason = (frame["reason"] or "")[:255]
    target.updated_at = at
    return target


def chunk_frame(
    session: Session, terminal_id: str, request: dict[str, Any], now: datetime
) -> bytes | None:
    """The ``chunk`` frame answering an ``otareq``, or None when the job is
    not an active offer to this terminal or names no file of its bundle."""
    target = session.get(OtaTarget, request["job"])
    if target is None or target.terminal_id != terminal_id or target.state in FINAL:
        return None
    rollout = session.get(OtaRollout, target.rollout_id)
    if rollout is None or rollout.state == CANCELLED:
        return None
    f = session.get(OtaBundleFile, (rollout.bundle_pk, request["path"]))
    if f is None:
        return None
    off = request["off"]
    data = f.data[off : off + min(request["len"], MAX_CHUNK)]
    try:
        return frames.encode(
            {
                "type": "chunk",
                "tid": terminal_id,
                "boot": 0,
                "seq": 0,
                "ts": int(now.timestamp()),
                "unsynced": False,
                "job": target.id,
                "path": f.path,
                "off": off,
                "size": f.size,
                "data": bytes(data),
            }
        )
    except ProtocolError:
        return None
