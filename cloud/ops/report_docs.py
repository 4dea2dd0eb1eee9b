"""Monthly reports as CSV and PDF.

CSV (UTF-8 with BOM), long format, one row per figure so any tool can pivot
it: ``terminal, terminal_name, item, channel, channel_name, value, unit, time,
detail`` (``channel_name`` is the customer's display name, else the wire name)
where ``item`` is ``max_leakage``, ``max_demand``, ``energy``,
``completeness`` or ``alarm``. Times carry their offset (``+09:00`` in JST).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from zoneinfo import ZoneInfo

from cloud.ops.pdf import HEADINGS, Document, find_font
from cloud.ops.reports import CustomerReport, TerminalReport
from cloud.ops.settings import OpsSettings

CSV_HEADER = (
    "terminal",
    "terminal_name",
    "item",
    "channel",
    "channel_name",
    "value",
    "unit",
    "time",
    "detail",
)
SEVERITY_JA = {"warning": "注意", "alarm": "警報"}


def _t(at: datetime | None, zone: ZoneInfo) -> str:
    return "" if at is None else at.astimezone(zone).isoformat(timespec="seconds")


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".")


def report_rows(t: TerminalReport, zone: ZoneInfo) -> list[tuple[str, ...]]:
    head = (t.terminal_id, t.name)
    rows: list[tuple[str, ...]] = []
    if t.leakage:
        rows.append(
            (
                *head,
                "max_leakage",
                t.leakage.channel,
                t.channel_name(t.leakage.channel),
                _num(t.leakage.value),
                t.leakage.unit,
                _t(t.leakage.at, zone),
                "",
            )
        )
    if t.demand:
        rows.append(
            (
                *head,
                "max_demand",
                t.demand.channel,
                t.channel_name(t.demand.channel),
                _num(t.demand.value),
                t.demand.unit,
                _t(t.demand.at, zone),
                "30-minute average from this time",
            )
        )
    for e in t.energy:
        rows.append(
            (*head, "energy", e.channel, t.channel_name(e.channel), _num(e.used), e.unit, "", "")
        )
    for c in (*t.completeness, t.overall_completeness):
        pct = c.percent
        rows.append(
            (
                *head,
                "completeness",
                c.channel,
                t.channel_name(c.channel) if c.channel != "*" else "",
                "" if pct is None else str(pct),
                "%",
                "",
                f"{c.received}/{c.expected} samples",
            )
        )
    for a in t.alarms:
        cleared = f"cleared {_t(a.cleared_at, zone)}" if a.cleared_at else "open"
        rows.append(
            (
                *head,
                "alarm",
                a.channel or "",
                t.channel_name(a.channel),
                _num(a.value),
                "",
                _t(a.raised_at, zone),
                f"{a.cond} {a.severity} {a.state}; threshold {_num(a.threshold)}; {cleared}",
            )
        )
    return rows


def report_csv(report: CustomerReport) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_HEADER)
    for t in report.terminals:
        w.writerows(report_rows(t, report.tz))
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def report_pdf(report: CustomerReport, ops: OpsSettings) -> bytes:
    """One page (or more) per terminal, in Japanese, times in the customer's zone."""
    zone = report.tz
    month = f"{report.month.year}年{report.month.month}月"
    doc = Document(find_font(ops.pdf_font), f"月次報告書 {report.customer_name} {month}")
    if not report.terminals:
        doc.add_page()
        doc.text_size(12)
        doc.cell(0, 10, f"{report.customer_name} 様 {month} 対象端末なし")
    for t in report.terminals:
        doc.add_page()
        doc.text_size(16)
        doc.cell(0, 10, f"月次報告書 {month}", align="C", new_x="LMARGIN", new_y="NEXT")
        doc.text_size(10)
        doc.cell(0, 6, f"{report.customer_name} 様", new_x="LMARGIN", new_y="NEXT")
        doc.cell(0, 6, f"端末 {t.terminal_id} {t.name}", new_x="LMARGIN", new_y="NEXT")
        if t.site:
            doc.cell(0, 6, f"設置場所 {t.site}", new_x="LMARGIN", new_y="NEXT")
        doc.cell(
            0,
            6,
            f"集計期間 {t.start.astimezone(zone):%Y-%m-%d %H:%M} 〜 "
            f"{t.end.astimezone(zone):%Y-%m-%d %H:%M}({report.zone})",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        doc.ln(3)
        with doc.table(
            col_widths=(45, 40, 35, 60), line_height=6, headings_style=HEADINGS
        ) as table:
            table.row(("項目", "チャンネル", "値", "日時"))
            if t.leakage:
                table.row(
                    (
                        "最大漏洩電流",
                        t.channel_name(t.leakage.channel),
                        f"{_num(t.leakage.value)} {t.leakage.unit}",
                        f"{t.leakage.at.astimezone(zone):%Y-%m-%d %H:%M:%S}",
                    )
                )
            else:
                table.row(("最大漏洩電流", "-", "データなし", ""))
            if t.demand:
                table.row(
                    (
                        "最大デマンド(30分)",
                        t.channel_name(t.demand.channel),
                        f"{_num(t.demand.value)} {t.demand.unit}",
                        f"{t.demand.at.astimezone(zone):%Y-%m-%d %H:%M} から30分",
                    )
                )
            else:
                table.row(("最大デマンド(30分)", "-", "データなし", ""))
            for e in t.energy:
                table.row(
                    ("使用電力量", t.channel_name(e.channel), f"{_num(e.used, 1)} {e.unit}", "")
                )
            overall = t.overall_completeness
            table.row(
                (
                    "データ取得率",
                    "全チャンネル",
                    "-" if overall.percent is None else f"{overall.percent} %",
                    f"{overall.received}/{overall.expected} 件",
                )
            )
        doc.ln(4)
        doc.text_size(11)
        doc.cell(0, 7, f"警報一覧({len(t.alarms)} 件)", new_x="LMARGIN", new_y="NEXT")
        doc.text_size(9)
        if t.alarms:
            with doc.table(
                col_widths=(36, 36, 30, 28, 18, 32), line_height=5, headings_style=HEADINGS
            ) as table:
                table.row(("発生", "復旧", "条件", "チャンネル", "種別", "値 / 閾値"))
                for a in t.alarms:
                    table.row(
                        (
                            f"{a.raised_at.astimezone(zone):%m-%d %H:%M:%S}",
                            f"{a.cleared_at.astimezone(zone):%m-%d %H:%M:%S}"
                            if a.cleared_at
                            else "継続中",
                            a.cond,
                            t.channel_name(a.channel) or "-",
                            SEVERITY_JA.get(a.severity, a.severity),
                            f"{_num(a.value)} / {_num(a.threshold)}",
                        )
                    )
        doc.ln(3)
        doc.text_size(9)
        doc.cell(0, 5, "チャンネル別データ取得率", new_x="LMARGIN", new_y="NEXT")
        with doc.table(col_widths=(60, 40, 40), line_height=5, headings_style=HEADINGS) as table:
            table.row(("チャンネル", "取得率", "受信/期待"))
            for c in t.completeness:
                table.row(
                    (
                        t.channel_name(c.channel),
                        "-" if c.percent is None else f"{c.percent} %",
                        f"{c.received}/{c.expected}",
                    )
                )
    return doc.to_bytes()
