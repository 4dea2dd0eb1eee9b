"""Billing rules as pure functions: cancellation rule, billed months, tax."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.models import Terminal
from cloud.ops import billing
from cloud.ops.errors import BillingError


@pytest.mark.parametrize(
    ("notice", "end"),
    [
        (date(2026, 3, 1), date(2026, 3, 31)),
        (date(2026, 3, 15), date(2026, 3, 31)),  # by the 15th: this month
        (date(2026, 3, 16), date(2026, 4, 30)),  # from the 16th: next month
        (date(2026, 3, 31), date(2026, 4, 30)),  # last day of the month
        (date(2026, 2, 15), date(2026, 2, 28)),  # February
        (date(2026, 2, 16), date(2026, 3, 31)),
        (date(2028, 2, 10), date(2028, 2, 29)),  # leap year
        (date(2026, 1, 31), date(2026, 2, 28)),
        (date(2026, 12, 16), date(2027, 1, 31)),  # across the year
    ],
)
def test_cancellation_notice_ends_the_contract_by_the_15th_rule(notice, end):
    assert billing.contract_end_for_notice(notice) == end


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)))
def test_the_contract_always_ends_on_a_month_end_within_two_months(notice):
    end = billing.contract_end_for_notice(notice)
    assert end >= notice
    assert billing.month_end(end) == end
    months = (end.year - notice.year) * 12 + end.month - notice.month
    assert months == (0 if notice.day <= 15 else 1)


def t(**kw) -> Terminal:
    return Terminal(id="T1", **kw)


def owed(terminal: Terminal, year: int = 2026) -> list[int]:
    return [m for m in range(1, 13) if billing.owes_base_fee(terminal, date(year, m, 1))]


def test_base_fee_months():
    assert owed(t(registered_on=date(2026, 3, 10))) == list(range(4, 13))
    assert owed(t(registered_on=date(2026, 3, 1))) == list(range(3, 13))
    assert owed(t(registered_on=date(2026, 3, 10), cancellation_notice_on=date(2026, 3, 12))) == []
    assert owed(t(registered_on=date(2026, 3, 10), cancellation_notice_on=date(2026, 3, 20))) == [4]
    assert owed(t(registered_on=date(2025, 5, 5), cancellation_notice_on=date(2026, 6, 30))) == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
    ]
    # contract_start wins over registered_on; an earlier explicit end wins over the notice.
    assert owed(t(registered_on=date(2025, 1, 1), contract_start=date(2026, 10, 1))) == [10, 11, 12]
    assert owed(
        t(
            registered_on=date(2025, 1, 1),
            contract_end=date(2026, 2, 3),
            cancellation_notice_on=date(2026, 2, 20),
        )
    ) == [1, 2]
    assert owed(t()) == []  # in stock: no dates, no fee


def test_a_contract_ending_before_it_starts_is_an_error():
    with pytest.raises(BillingError, match="before it starts"):
        billing.owes_base_fee(
            t(registered_on=date(2026, 5, 1), contract_end=date(2026, 4, 30)), date(2026, 5, 1)
        )


def test_cancel_records_the_notice_and_the_resulting_end():
    terminal = t(registered_on=date(2026, 1, 5))
    assert billing.cancel(terminal, date(2026, 4, 16)) == date(2026, 5, 31)
    assert terminal.cancellation_notice_on == date(2026, 4, 16)
    assert terminal.contract_end == date(2026, 5, 31)


def test_registration_fee_month():
    assert billing.registered_in(t(registered_on=date(2026, 2, 28)), date(2026, 2, 1))
    assert not billing.registered_in(t(registered_on=date(2026, 2, 28)), date(2026, 3, 1))
    assert not billing.registered_in(t(), date(2026, 3, 1))


def draft(amounts: list[int], rate: int = 10) -> billing.Draft:
    lines = tuple(billing.Line("base", "insulation", None, "x", 1, a) for a in amounts)
    return billing.Draft(1, "c", date(2026, 1, 1), lines, rate)


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=50))
def test_tax_is_rounded_down_once_per_invoice(amounts):
    d = draft(amounts)
    assert d.subtotal == sum(amounts)
    assert d.tax * 10 <= d.subtotal < (d.tax + 1) * 10
    assert d.total == d.subtotal + d.tax
    assert all(type(v) is int for v in (d.subtotal, d.tax, d.total))


def test_per_invoice_rounding_differs_from_per_line_rounding():
    d = draft([15, 15, 15])  # 1.5 + 1.5 + 1.5: per line 3 yen, per invoice 4 yen
    assert d.tax == 4
