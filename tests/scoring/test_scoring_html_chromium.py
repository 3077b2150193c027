"""leaderboard.html in a real browser: headless Chromium (Debian's `chromium`) must render the
table, load every embedded image, and sort the table when a header is clicked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless check needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

PROBE = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var table = document.getElementById('leaderboard');
  var body = table.tBodies[0];
  var first = body.rows[0].cells[1].textContent;
  table.tHead.rows[0].cells[2].click();  // sort by score, ascending
  var sorted = body.rows[0].cells[1].textContent;
  document.title = 'PROBE images=' + images.length + ' loaded=' + loaded + ' rows=' + body.rows.length
    + ' sortable=' + table.getAttribute('data-sortable') + ' first=' + first + ' sorted=' + sorted;
});
</script></body>"""


def test_leaderboard_html_renders_table_and_images(standard_report, tmp_path):
    _, out = standard_report
    page = tmp_path / "probe.html"
    page.write_text((out / "leaderboard.html").read_text().replace("</body>", PROBE))
    profile = tmp_path / "chromium-profile"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    title = re.search(r"<title>(PROBE[^<]*)</title>", done.stdout)
    assert title, f"chromium did not run the probe (exit {done.returncode}): {done.stderr[-2000:]}"
    fields = dict(item.split("=", 1) for item in title.group(1).split()[1:])
    assert int(fields["images"]) == 5 and fields["loaded"] == fields["images"]
    assert fields["rows"] == "3" and fields["sortable"] == "ready"
    assert fields["first"] == "fast" and fields["sorted"] == "slow"  # sorted by score, ascending
