"""Which channel table explains a data frame: the birth of the same (terminal, boot).

The ``channels`` table keeps one *generation* of rows per channel-table
change: :func:`cloud.models.apply_birth` retires the current rows and adds
new ones stamped with the declaring birth's boot, and does nothing when a
birth repeats the current table (a reboot with the same sensors). So the
table in force at boot ``B`` is the generation with the greatest boot
``<= B`` (the newest one of that boot, should a buggy terminal have changed
channels without a new boot).

That answer is only safe once the cloud has processed a birth of boot
``B`` or later: before, a generation of an older boot would be taken for
boot ``B``'s and misread the aliases. The caller therefore asks only for
``B <= terminal.last_boot`` (or has boot ``B``'s birth in hand).

Late births (an older boot's birth drained from the outbox after the current
boot's birth) must not touch the current rows; when their table differs from
the one recorded for their boot, :func:`record_late_birth` adds it as an
already-retired generation so the older boot's data still finds it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms.values import ChannelMeta
from cloud.models import Channel, ChannelSpec

# What a data frame (and the alarm engine naming an alarm's channel) needs
# of one channel: name, unit, exp.
ChannelInfo = ChannelMeta
ChannelMap = dict[int, ChannelInfo]


def specs_of(channels: Iterable[dict[str, object]]) -> list[ChannelSpec]:
    """ChannelSpecs of a decoded birth frame's ``channels`` list, sorted."""
    return sorted(
        ChannelSpec(
            int(c["alias"]),  # type: ignore[call-overload]
            str(c["name"]),
            str(c["unit"]),
            str(c["kind"]),
            int(c["exp"]),  # type: ignore[call-overload]
        )
        for c in channels
    )


def map_of(specs: Iterable[ChannelSpec]) -> ChannelMap:
    return {s.alias: ChannelInfo(s.name, s.unit, s.exp) for s in specs}


def generation(session: Session, terminal_id: str, boot: int) -> list[ChannelSpec] | None:
    """The channel table recorded for ``boot`` (see the module doc), sorted;
    None if no generation of that boot or an older one exists."""
    newest_boot = (
        sa.select(sa.func.max(Channel.boot))
        .where(Channel.terminal_id == terminal_id, Channel.boot <= boot)
        .scalar_subquery()
    )
    rows = session.execute(
        sa.select(
            Channel.alias,
            Channel.name,
            Channel.unit,
            Channel.kind,
            Channel.exp,
            Channel.declared_at,
        ).where(Channel.terminal_id == terminal_id, Channel.boot == newest_boot)
    ).all()
    if not rows:
        return None
    latest = max(r.declared_at for r in rows)
    return sorted(
        ChannelSpec(r.alias, r.name, r.unit, r.kind, r.exp) for r in rows if r.declared_at == latest
    )


def record_late_birth(
    session: Session, terminal_id: str, specs: Sequence[ChannelSpec], boot: int, at: datetime
) -> bool:
    """Keep an older boot's channel table without changing the current one.

    Returns True if rows were added (the table differed from the generation
    recorded for ``boot``). The rows are born retired, so the partial unique
    indexes on current channels never see them.
    """
    if generation(session, terminal_id, boot) == sorted(specs):
        return False
    session.add_all(
        Channel(
            terminal_id=terminal_id,
            alias=s.alias,
            name=s.name,
            unit=s.unit,
            kind=s.kind,
            exp=s.exp,
            boot=boot,
            declared_at=at,
            retired_at=at,
        )
        for s in specs
    )
    session.flush()
    return True


class MapCache:
    """LRU of resolved (terminal, boot) -> ChannelMap.

    Only answers that can no longer change belong here (boots at or below
    ``last_boot`` at lookup time). :meth:`forget` drops a terminal's entries
    when this worker applies a birth for it.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._maps: OrderedDict[tuple[str, int], ChannelMap] = OrderedDict()

    def get(self, terminal_id: str, boot: int) -> ChannelMap | None:
        key = (terminal_id, boot)
        found = self._maps.get(key)
        if found is not None:
            self._maps.move_to_end(key)
        return found

    def put(self, terminal_id: str, boot: int, channels: ChannelMap) -> None:
        self._maps[(terminal_id, boot)] = channels
        self._maps.move_to_end((terminal_id, boot))
        while len(self._maps) > self.size:
            self._maps.popitem(last=False)

    def forget(self, terminal_ids: Iterable[str]) -> None:
        gone = set(terminal_ids)
        for key in [k for k in self._maps if k[0] in gone]:
            del self._maps[key]
