"""PDF basics shared by invoices and reports (fpdf2 with a Japanese font).

Japanese text needs a font with CJK glyphs; PDF core fonts have none. The
font is ``pdf_font`` from the settings, else the first of a few well-known
Debian paths (``fonts-ipafont-gothic``, ``fonts-noto-cjk``), else whatever
``fc-match :lang=ja`` names. None found raises :class:`OpsError` telling
which package to install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from cloud.ops.errors import OpsError

KNOWN_FONTS = (
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
    "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansJP-Regular.ttf",
)
FONT = "jp"
# Only the regular face is loaded, so table headings are shaded, not bold.
HEADINGS = FontFace(emphasis="", fill_color=(230, 230, 230))


def find_font(configured: str = "") -> Path:
    """Path of a TrueType font with Japanese glyphs (see the module doc)."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise OpsError(f"pdf_font {configured} does not exist")
        return path
    for candidate in KNOWN_FONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    fc_match = shutil.which("fc-match")
    if fc_match:
        found = subprocess.run(
            [fc_match, "-f", "%{file}", ":lang=ja"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
        if found.endswith(".ttf") and Path(found).is_file():
            return Path(found)
    raise OpsError(
        "no Japanese TrueType font found: install the Debian package "
        "'fonts-ipafont-gothic' or set pdf_font"
    )


class Document(FPDF):
    """A4 portrait with the Japanese font loaded and a page footer."""

    def __init__(self, font: Path, title: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.add_font(FONT, fname=str(font))
        self.set_title(title)
        self.set_creator("mimamori")
        self.set_auto_page_break(auto=True, margin=15)
        self.set_margins(15, 15, 15)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.cell(0, 5, f"{self.page_no()} / {{nb}}", align="C")

    def text_size(self, size: float) -> None:
        self.set_font(FONT, size=size)

    def to_bytes(self) -> bytes:
        return bytes(self.output())
