"""Query planning shared by the backends: bucket widths, pieces, merging.

Backends keep hour and day rollups (min/max/sum/count). An aggregate query is
split into pieces (:func:`plan`): whole days from the day rollup, whole hours
from the hour rollup, and only the ragged ends from raw samples, so a year of
one-minute data costs about as much as a day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from cloud.timeseries.points import Bucket, Point

HOUR = 3600
DAY = 86400
ROLLUP_WIDTHS = (DAY, HOUR)  # the rollups every backend maintains, coarse first
RAW = 0  # tier id of raw samples in a plan
# Bucket widths a query may pick, in seconds; beyond the last, whole weeks.
# fmt: off
LADDER = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY,
)
# fmt: on

Piece = tuple[int, int, int]  # (tier: RAW or a rollup width, lo, hi) half-open


def bucket_offset(width: int, tz_offset_s: int) -> int:
    """Shift of bucket boundaries from epoch multiples of ``width`` that puts
    local midnight (at UTC offset ``tz_offset_s``; JST is 32400) on a boundary.
    Buckets then start at ``k * width + offset``, with ``0 <= offset < width``."""
    return -tz_offset_s % width


def bucket_count(start: int, end: int, width: int, offset: int = 0) -> int:
    """How many buckets of ``width`` (shifted by ``offset``) ``[start, end)`` touches."""
    return (end - 1 - offset) // width - (start - offset) // width + 1


def plan(start: int, end: int, width: int, offset: int = 0) -> list[Piece]:
    """Split ``[start, end)`` into pieces answerable from the coarsest tier.

    A rollup tier ``t`` (epoch-aligned buckets of ``t`` seconds) may serve a
    piece only if ``t`` divides both ``width`` and ``offset``: then every query
    bucket boundary is a tier boundary and no rollup bucket straddles two
    query buckets. Pieces are disjoint, ordered and cover the range.
    """
    tiers = tuple(t for t in ROLLUP_WIDTHS if width % t == 0 and offset % t == 0)
    return [p for p in _cover(start, end, tiers) if p[1] < p[2]]


def _cover(lo: int, hi: int, tiers: tuple[int, ...]) -> list[Piece]:
    if lo >= hi:
        return []
    if not tiers:
        return [(RAW, lo, hi)]
    tier, finer = tiers[0], tiers[1:]
    a = -(-lo // tier) * tier  # first tier boundary at or after lo
    b = hi // tier * tier  # last tier boundary at or before hi
    if a >= b:
        return _cover(lo, hi, finer)
    return [*_cover(lo, a, finer), (tier, a, b), *_cover(b, hi, finer)]


def choose_width(start: int, end: int, max_points: int, tz_offset_s: int = 0) -> int:
    """Smallest ladder width giving at most ``max_points`` buckets over the range.

    Beyond the ladder, whole weeks. One corner cannot be met: with
    ``max_points == 1`` west of UTC, the boundary at local midnight of
    1970-01-01 exists for every width, so a range spanning it gets 2 buckets.
    """
    for width in LADDER:
        if bucket_count(start, end, width, bucket_offset(width, tz_offset_s)) <= max_points:
            return width
    week = 7 * DAY
    width = week * max(1, math.ceil((end - start) / (week * max_points)))
    # Once a bucket is twice the range, at most two buckets remain; stop there.
    while (
        bucket_count(start, end, width, bucket_offset(width, tz_offset_s)) > max_points
        and width < 2 * (end - start) + week
    ):
        width += week
    if bucket_count(start, end, width, bucket_offset(width, tz_offset_s)) > max_points:
        # Only max_points == 1 gets here: a boundary still cuts the range. With
        # a bucket wider than the distance of both ends from local epoch
        # midnight, the only boundary left near the range is that midnight.
        reach = max(abs(start), abs(end)) + abs(tz_offset_s) + 1
        width = week * math.ceil(reach / week)
    return width


Partial = tuple[int, float, float, float, int]  # (bucket start, min, max, sum, count)


def merge(partials: Iterable[Partial]) -> list[Bucket]:
    """Combine per-piece partial aggregates of the same buckets into buckets."""
    acc: dict[int, list[float]] = {}
    for start, lo, hi, total, count in partials:
        if not count:
            continue
        cur = acc.get(start)
        if cur is None:
            acc[start] = [lo, hi, total, count]
        else:
            cur[0] = min(cur[0], lo)
            cur[1] = max(cur[1], hi)
            cur[2] += total
            cur[3] += count
    return [Bucket(start, v[0], v[1], v[2] / v[3], int(v[3])) for start, v in sorted(acc.items())]


def dedupe(points: Iterable[Point]) -> list[Point]:
    """Last write wins within one batch, as it does across batches."""
    # p[:3] is p.key without the property call: this runs for every sample.
    latest: dict[tuple[str, str, int], Point] = {p[:3]: p for p in points}
    return list(latest.values())


def runs(buckets: Iterable[int], width: int) -> list[tuple[int, int]]:
    """Merge bucket starts into half-open ranges of adjacent buckets."""
    out: list[tuple[int, int]] = []
    for b in sorted(set(buckets)):
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + width)
        else:
            out.append((b, b + width))
    return out
