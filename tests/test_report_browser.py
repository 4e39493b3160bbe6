"""report.html in a real browser (Debian's chromium, headless): images load and are visible, no script
errors, and the summary table shows what results.json holds.

The page checks itself on load and writes the result as data attributes of <body> (images, broken,
hidden, errors, checked); ``--dump-dom`` returns the DOM after that script ran. A page with a broken
image and a script error is rendered too, to show the check can fail.

Without chromium these tests skip locally (``make browser`` installs it) but FAIL when ``CI`` is set.
"""
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from regulab.report import write_report
from test_report_tables import STANDARD, make_study

pytestmark = pytest.mark.browser

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium")
    if exe is None:
        msg = "Debian's chromium is not installed (`make browser` installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so the browser tests must not be skipped")
        pytest.skip(msg)
    return exe


def _chrome(exe, tmp_path, url, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


class _Dom(HTMLParser):
    """Collects <body> attributes and the summary table's cells (data-col -> text per data-arm row)."""

    def __init__(self):
        super().__init__()
        self.body, self.rows, self._table, self._row, self._col = {}, {}, False, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._table = a.get("id") == "summary"
        elif tag == "tr" and self._table and "data-arm" in a:
            self._row = self.rows.setdefault(a["data-arm"], {})
        elif tag == "td" and self._row is not None and "data-col" in a:
            self._col = a["data-col"]
            self._row[self._col] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._col = None
        elif tag == "table":
            self._table, self._row = False, None

    def handle_data(self, data):
        if self._col is not None:
            self._row[self._col] += data


def _dom(exe, tmp_path, page):
    r = _chrome(exe, tmp_path, page.resolve().as_uri(), "--virtual-time-budget=10000", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    d = _Dom()
    d.feed(r.stdout)
    return d, r.stderr


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = make_study(tmp_path_factory.mktemp("browser"), STANDARD)
    return write_report(d)


def test_images_load_and_no_script_errors(chromium, report, tmp_path):
    dom, stderr = _dom(chromium, tmp_path, report)
    b = dom.body
    assert b.get("data-checked") == "1", "the page's self-check did not run"
    assert b["data-images"] == "5" and b["data-broken"] == "0" and b["data-hidden"] == "0"
    assert b["data-errors"] == "0", b.get("data-error-text")
    assert "Uncaught" not in stderr


def test_the_check_catches_a_broken_image_and_a_script_error(chromium, report, tmp_path):
    html = report.read_text()
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,AAAA", html, count=1)
    html = html.replace("</body>", "<script>no_such_function();</script></body>")
    bad = tmp_path / "bad.html"
    bad.write_text(html)
    dom, _ = _dom(chromium, tmp_path, bad)
    assert dom.body["data-broken"] == "1" and int(dom.body["data-errors"]) >= 1


def _num(text):
    return float(text.replace("−", "-").replace("+", "").replace("±", ""))


def test_summary_table_matches_results_json(chromium, report, tmp_path):
    dom, _ = _dom(chromium, tmp_path, report)
    doc = json.loads((report.parent / "results.json").read_text())
    assert list(dom.rows) == [a["arm"] for a in doc["arms"]]
    for a in doc["arms"]:
        cells = dom.rows[a["arm"]]
        assert cells["arm"].strip() == a["arm"]
        assert cells["finished"].split()[0] == str(a["finished"])
        for col, nd in (("test_acc_pct_mean", 1), ("diff_acc_pts_mean", 1), ("gap_acc_pts_mean", 1),
                        ("noise_ratio", 2), ("epochs_to_best_mean", 1), ("epoch_time_s_mean", 2)):
            if a[col] is None:
                assert cells[col] == "—", col
            else:
                assert _num(cells[col]) == pytest.approx(a[col], abs=0.51 * 10 ** -nd), col
        for key in ("test_acc_pct", "diff_acc_pts"):
            lo, hi = a[f"{key}_low"], a[f"{key}_high"]
            if lo is not None:
                got = [_num(x) for x in cells[f"{key}_ci"].split("…")]
                assert got == [pytest.approx(lo, abs=0.051), pytest.approx(hi, abs=0.051)], key
        if a["p_holm"] is None:
            assert cells["p_holm"] == "—"
        elif cells["p_holm"] == "p<0.001":
            assert a["p_holm"] < 0.001
        else:
            assert _num(cells["p_holm"].removeprefix("p=")) == pytest.approx(a["p_holm"], abs=0.006)


def test_screenshot(chromium, report, tmp_path):
    shot = tmp_path / "report.png"
    r = _chrome(chromium, tmp_path, report.resolve().as_uri(), f"--screenshot={shot}", "--window-size=1280,4000")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (4000, 1280)
    assert img[:1000].std() > 0.05  # not a blank page
