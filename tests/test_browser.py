"""report.html and compare.html in a real browser: the system's headless Chromium (Debian package
``chromium``, /usr/bin/chromium) driven by Playwright, pages opened from disk (file://).

Checked: no console error and no uncaught script error, the tables sort when a header is clicked,
every image loads (naturalWidth > 0), and no request leaves the machine (only file: and data: URLs).
These tests never skip silently: without Chromium or Playwright they fail naming the set-up line;
only MET3R_SKIP_BROWSER_TESTS=1 (never set by CI) skips them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_data import make_runs

from met3r_metrics.cli.compare import main as compare_main

CHROMIUM = os.environ.get("MET3R_CHROMIUM", "/usr/bin/chromium")
SETUP = 'apt-get update && apt-get install -y chromium && pip install torch==2.13.0 -e ".[dev]"'
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if os.environ.get("MET3R_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("MET3R_SKIP_BROWSER_TESTS=1")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"browser tests need Chromium at {CHROMIUM}: run README's set-up line ({SETUP})", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"browser tests need the playwright package: run README's set-up line ({SETUP})", pytrace=False)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(  # a fresh profile folder of its own
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield context
        context.close()


@pytest.fixture(scope="module")
def pages(golden_root, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser_runs")
    runs = make_runs(golden_root, root)
    compare_main([str(runs["clean"]), str(runs["noisy"]), str(runs["partial"]), f"output.dir={root / 'cmp'}"])
    return {"report": runs["clean"] / "report.html", "compare": root / "cmp" / "compare.html"}


class Visit:
    """A page opened from disk, with what it logged, threw and requested."""

    def __init__(self, context, path: Path):
        self.page = context.new_page()
        self.console, self.errors, self.requests, self.failed = [], [], [], []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))
        self.page.goto(path.resolve().as_uri(), wait_until="load")

    def problems(self) -> list[str]:
        """Everything that breaks the rules: console errors/warnings, script errors, requests off the machine,
        images that did not load."""
        out = [c for c in self.console if c.split(":")[0] in ("error", "warning")]
        out += [f"script error: {e}" for e in self.errors]
        out += [f"request: {u[:80]}" for u in self.requests if not u.startswith(("file:", "data:"))]
        out += [f"failed: {u[:80]}" for u in self.failed]
        out += [f"image not loaded: {alt}" for alt, ok, width in self.images() if not (ok and width > 0)]
        return out

    def images(self) -> list[tuple[str, bool, int]]:
        return self.page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")

    def column(self, table: str, col: int) -> list[str]:
        return self.page.evaluate(
            f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => {{"
            f" const c = r.cells[{col}]; return c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent; }})")

    def click_header(self, table: str, label: str) -> None:
        self.page.click(f"#{table} thead th:text-is('{label}')")

    def close(self) -> None:
        self.page.close()


def _numbers(values: list[str]) -> list[float]:
    return [float(v) for v in values if v != ""]


def test_report_page(browser, pages):
    visit = Visit(browser, pages["report"])
    try:
        assert visit.problems() == []
        images = visit.images()
        assert len(images) == 4 * 6  # 4 worst pairs x (2 frames, 2 renders, score map, mask)
        assert visit.requests and all(u.startswith("file:") for u in visit.requests[:1])
        before = visit.column("sequences", 1)
        visit.click_header("sequences", "score")
        up = visit.column("sequences", 1)
        assert _numbers(up) == sorted(_numbers(before)) and up[-1] == ""  # the error row (no score) last
        visit.click_header("sequences", "score")
        down = _numbers(visit.column("sequences", 1))
        assert down == sorted(down, reverse=True) and down != _numbers(up)
        visit.click_header("sequences", "sequence")
        names = visit.column("sequences", 0)
        assert names == sorted(names)
        assert visit.page.locator("svg.chart").count() == 3
        assert visit.problems() == []
    finally:
        visit.close()


def test_compare_page(browser, pages):
    visit = Visit(browser, pages["compare"])
    try:
        assert visit.problems() == []
        assert visit.column("methods", 0) == ["clean", "noisy", "partial"]
        visit.click_header("methods", "mean")
        means = _numbers(visit.column("methods", 1))
        assert means == sorted(means)
        visit.click_header("methods", "mean")
        assert _numbers(visit.column("methods", 1)) == sorted(means, reverse=True)
        visit.click_header("per-sequence", "noisy")
        noisy = _numbers(visit.column("per-sequence", 2))
        assert noisy == sorted(noisy) and len(noisy) == 3
        assert visit.page.locator("svg.chart circle").count() == 3 + 2  # one dot per common sequence
        assert visit.images() == [] and visit.problems() == []
    finally:
        visit.close()


def test_the_checks_catch_what_they_look_for(browser, tmp_path):
    """A page with a script error, a console error, a broken image and an outside request fails every check."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                   '<img alt="broken" src="data:image/png;base64,AAAA">'
                   '<img alt="outside" src="http://127.0.0.1:9/x.png">'
                   "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    visit = Visit(browser, bad)
    try:
        visit.page.wait_for_timeout(300)
        problems = visit.problems()
    finally:
        visit.close()
    assert "error: boom" in problems
    assert any(p.startswith("script error:") and "undefinedFunction" in p for p in problems)
    assert "request: http://127.0.0.1:9/x.png" in problems
    assert "image not loaded: broken" in problems and "image not loaded: outside" in problems
