"""30-minute demand prediction, as Japanese demand monitors do it.

Electricity contracts in Japan (高圧受電) bill the largest 30-minute average
power of the year ("demand"); periods start at :00 and :30 local time. A
demand monitor predicts, during a period, what the period's average will be
if the load stays as it is now, and warns early enough to shed load:

    predicted energy (kWh) = used so far (kWh) + current power (kW) x remaining time (h)
    predicted demand (kW)  = predicted energy / period length (h)

Everything here is pure arithmetic on plain values; the sweep in
:mod:`cloud.alarms.conditions` feeds it from the time series.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cloud.errors import InvalidValue

PERIOD_S = 1800
JST = ZoneInfo("Asia/Tokyo")


def period_of(
    at: datetime, zone: ZoneInfo = JST, period_s: int = PERIOD_S
) -> tuple[datetime, datetime]:
    """Start and end of the demand period holding ``at``, aligned to the
    local clock of ``zone`` (:00 and :30 in JST; this matters for zones with
    half-hour offsets, where UTC alignment would be wrong).

    Raises :class:`InvalidValue` for a naive ``at`` or a period that does
    not divide an hour.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidValue("naive datetime")
    if period_s <= 0 or 3600 % period_s:
        raise InvalidValue(f"period {period_s} s does not divide an hour")
    local = at.astimezone(zone)
    offset = (local.minute * 60 + local.second) // period_s * period_s
    start = local.replace(minute=offset // 60, second=offset % 60, microsecond=0)
    return start.astimezone(at.tzinfo), (start + timedelta(seconds=period_s)).astimezone(at.tzinfo)


def predict_kw(
    used_kwh: float, current_kw: float, elapsed_s: float, period_s: int = PERIOD_S
) -> float:
    """Predicted average power (kW) of the whole period.

    ``used_kwh`` is the energy used since the period started, ``current_kw``
    the power now, ``elapsed_s`` the seconds since the period started
    (0..period_s). Raises :class:`InvalidValue` for non-finite inputs,
    negative energy or an elapsed time outside the period.

    >>> predict_kw(used_kwh=20.0, current_kw=100.0, elapsed_s=900)  # 20 + 100 * 0.25 = 45 kWh
    90.0
    """
    for name, v in (("used_kwh", used_kwh), ("current_kw", current_kw), ("elapsed_s", elapsed_s)):
        if not math.isfinite(v):
            raise InvalidValue(f"{name} is {v}")
    if used_kwh < 0:
        raise InvalidValue(f"used_kwh {used_kwh} < 0 (counter reset?)")
    if not 0 <= elapsed_s <= period_s:
        raise InvalidValue(f"elapsed_s {elapsed_s} outside 0..{period_s}")
    remaining_h = (period_s - elapsed_s) / 3600
    # Power flowing back (negative) still lowers the period's average.
    predicted_kwh = used_kwh + current_kw * remaining_h
    return predicted_kwh * 3600 / period_s


def over_contract(predicted_kw: float, contracted_kw: float) -> bool:
    """True if the prediction exceeds the contracted demand (strictly)."""
    if not contracted_kw > 0:
        raise InvalidValue(f"contracted demand must be > 0 kW, got {contracted_kw}")
    return predicted_kw > contracted_kw
