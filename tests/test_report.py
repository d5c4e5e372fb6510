"""analysis.report: one self-contained HTML page; headless Chromium shows its tables and images.

Chromium (Debian's ``chromium``) is optional locally: the browser test skips without
/usr/bin/chromium, unless RISE_DIST_REQUIRE_CHROMIUM=1 (CI), where its absence fails."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from analysis_store import ablation_store

from analysis import report

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    ablation_store(root / "store")
    return report.write(root / "store", root / "out" / "report.html", published=True)


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    assert text.count("<table class=\"results\">") == 2  # HTER and AUC
    assert "<b>11.00 ± 1.00</b>†" in text
    assert "completed: " in text and "failed: 1" in text and "diverged: 3" in text and "0.1.0+gtest" in text
    assert text.count("data:image/png;base64,") == 6
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)  # nothing loaded from elsewhere


def test_chromium_renders_tables_and_images(page, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("RISE_DIST_REQUIRE_CHROMIUM") == "1":
            pytest.fail("RISE_DIST_REQUIRE_CHROMIUM=1 but /usr/bin/chromium is missing")
        pytest.skip("chromium not installed (apt-get install chromium)")
    # The page plus a probe: the title becomes the number of images that decoded.
    probe = ("<script>window.addEventListener('load', () => { document.title = 'decoded:' + "
             "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length; });</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           probed.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert "<title>decoded:6</title>" in dom
    assert len(re.findall(r"<table class=\"results\">", dom)) == 2
    assert "<b>11.00 ± 1.00</b>" in dom and "RiSe" in dom
