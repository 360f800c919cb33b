"""The HTML report opened in a real headless browser: every plot must load."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from scaletrain.calo import compare
from scaletrain.calo.report import write_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: after load, it writes how many images decoded.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = `IMAGES ${ok}/${imgs.length}`;
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(
    BROWSER is None and not os.environ.get("CI"),
    reason="chromium is not installed (CI installs it)",
)
def test_every_plot_of_the_html_report_loads_in_a_browser(small_pair, tmp_path):
    assert BROWSER is not None, "chromium missing: .ci/run installs Debian's chromium"
    gen, ref = small_pair
    out = tmp_path / "report"
    write_report(compare(gen, ref), out)
    page = (out / "report.html").read_text()
    n_images = len(re.findall(r"<img ", page))
    assert n_images >= 5
    (out / "probe.html").write_text(page.replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (out / "probe.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r"IMAGES (\d+)/(\d+)", done.stdout)
    assert found, f"the page did not finish loading: {done.stderr[-500:]}"
    assert found.group(1) == found.group(2) == str(n_images)
