"""Invoices as downloadable CSV and PDF.

CSV: UTF-8 with a byte-order mark (so Excel in Japan opens it as UTF-8),
one row per line, then subtotal, tax and total rows; amounts are plain
integers (yen), times in the customer's zone with their offset.
"""

from __future__ import annotations

import csv
import io
from zoneinfo import ZoneInfo

from cloud.models.ops import Invoice
from cloud.ops.pdf import HEADINGS, Document, find_font
from cloud.ops.settings import OpsSettings

CSV_HEADER = (
    "invoice",
    "period",
    "customer",
    "line",
    "kind",
    "item",
    "terminal",
    "description",
    "quantity",
    "unit_price_jpy",
    "amount_jpy",
)


def yen(amount: int) -> str:
    return f"¥{amount:,}"


def invoice_csv(invoice: Invoice) -> bytes:
    """The invoice as CSV bytes (see the module doc)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_HEADER)
    period = invoice.period.strftime("%Y-%m")
    head = (invoice.number, period, invoice.customer_name)
    for line in invoice.lines:
        w.writerow(
            (
                *head,
                line.position,
                line.kind,
                line.item,
                line.terminal_id or "",
                line.description,
                line.quantity,
                line.unit_price,
                line.amount,
            )
        )
    w.writerow((*head, "", "subtotal", "", "", "小計", "", "", invoice.subtotal))
    tax = f"消費税 ({invoice.tax_rate_percent}%)"
    w.writerow((*head, "", "tax", "", "", tax, "", "", invoice.tax))
    w.writerow((*head, "", "total", "", "", "合計", "", "", invoice.total))
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def invoice_pdf(invoice: Invoice, ops: OpsSettings, zone: ZoneInfo) -> bytes:
    """The invoice as a one-or-more page A4 PDF in Japanese."""
    doc = Document(find_font(ops.pdf_font), f"請求書 {invoice.number}")
    doc.add_page()
    doc.text_size(20)
    doc.cell(0, 12, "請求書", align="C", new_x="LMARGIN", new_y="NEXT")
    doc.text_size(10)
    issued = invoice.issued_at.astimezone(zone)
    doc.cell(0, 6, f"請求書番号 {invoice.number}", align="R", new_x="LMARGIN", new_y="NEXT")
    doc.cell(0, 6, f"発行日 {issued:%Y年%m月%d日}", align="R", new_x="LMARGIN", new_y="NEXT")
    doc.ln(2)
    doc.text_size(14)
    doc.cell(0, 9, f"{invoice.customer_name} 御中", new_x="LMARGIN", new_y="NEXT")
    doc.text_size(10)
    doc.cell(
        0,
        6,
        f"対象期間 {invoice.period.year}年{invoice.period.month}月分",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    doc.ln(3)
    doc.text_size(13)
    doc.cell(
        0, 10, f"ご請求金額 {yen(invoice.total)}(税込)", border="B", new_x="LMARGIN", new_y="NEXT"
    )
    doc.ln(4)
    doc.text_size(9)
    with doc.table(
        col_widths=(90, 20, 30, 40),
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        line_height=6,
        headings_style=HEADINGS,
    ) as table:
        table.row(("品目", "数量", "単価", "金額"))
        for line in invoice.lines:
            table.row(
                (line.description, f"{line.quantity:,}", yen(line.unit_price), yen(line.amount))
            )
        table.row(("小計", "", "", yen(invoice.subtotal)))
        table.row(
            (
                f"消費税({invoice.tax_rate_percent}%対象 {yen(invoice.subtotal)})",
                "",
                "",
                yen(invoice.tax),
            )
        )
        table.row(("合計", "", "", yen(invoice.total)))
    doc.ln(4)
    doc.text_size(8)
    doc.multi_cell(
        0,
        5,
        "消費税は請求書ごとに1回、1円未満を切り捨てて計算しています。金額は日本円です。",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    doc.ln(2)
    doc.text_size(9)
    doc.cell(0, 5, ops.issuer_name, new_x="LMARGIN", new_y="NEXT")
    if ops.issuer_registration_number:
        doc.cell(0, 5, f"登録番号 {ops.issuer_registration_number}", new_x="LMARGIN", new_y="NEXT")
    return doc.to_bytes()
