"""The uncertainty report: generated from the shared fitted posterior, parsed, and rendered in Chromium."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gaelp_bayes import cache, cli
from gaelp_bayes.report import figure_folder

FIGURES = {"data_coverage", "hourly_conversion_rate", "conversion_level_over_time",
           "heatmap_conversion_rate", "cost_by_hour", "allocation",
           "pacing_curve", "importance_khat", "predictive_check"}  # the default engine: Laplace + importance sampling
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects images, section headings and the text of a report."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self.text, self._in_h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
        self.text.append(data)


@pytest.fixture(scope="module")
def report(fitted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "sim.html"
    assert cli.main(["report", str(fitted.path), "--out", str(out), "--budget", "80", "--date", "2026-03-02",
                     "--campaign", "campaign_02"]) == 0
    return out


def test_report_is_self_contained_with_every_figure(report, fitted):
    page = Page()
    page.feed(report.read_text(encoding="utf-8"))
    assert {img["alt"] for img in page.images} == FIGURES
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)  # opens offline
    assert "<link" not in report.read_text() and "http" not in "".join(img["src"][:40] for img in page.images)
    for name in FIGURES:
        assert (figure_folder(report) / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    text = "".join(page.text)
    assert "Allocation" in page.headings and "Can the fit be trusted?" in page.headings
    assert "Budget 80.00" in text and "campaign_02" in text and "Confidence" in text
    failed = cache.failed_parts(fitted.manifest)  # the banner says what the manifest says, part by part
    if failed:
        assert f"FAILED its diagnostics gate in the {' and '.join(failed)} part" in text
        assert "PASSED its diagnostics gate" not in text
    else:
        assert "PASSED its diagnostics gate" in text and "FAILED" not in text


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a model cache" in err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium: `make test` installs Debian's chromium when it can "
                    "(apt-get as root); install it to run the browser render test")
def test_report_renders_in_headless_chromium(report, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    # the page's own load handler marks it 'ok' only when every image decoded
    assert 'data-rendered="ok"' in dom.stdout, dom.stdout[:300]
    shot = tmp_path / "page.png"
    subprocess.run([_chromium(), *flags, "--window-size=1100,2000", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000  # not a blank page
