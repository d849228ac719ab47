"""report.html in a real browser: headless Chromium renders it on a laptop and a phone screen.

Needs Debian's chromium at /usr/bin/chromium (tests/browser.py drives it); under CI=true its
absence fails.
"""


import numpy as np
import pytest

from browser import Browser, chromium
from test_report import build, make_experiments


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    session = Browser(chromium(), tmp_path_factory.mktemp("chromium") / "profile")
    yield session
    session.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    experiments, images = make_experiments(n=200, runs={"base": ({}, 2.0), "wide": ({"hidden": [512]}, 3.0)})
    return build(tmp_path_factory.mktemp("browser-report"), experiments, images)["html"]


# The page's images that did not decode, and whether it is wider than the screen.
BROKEN_IMAGES = "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"


def test_the_harness_sees_errors_and_broken_images(browser, tmp_path):
    # Without this control, a harness that missed every error would pass any page.
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><title>t</title><img src="missing.png" alt="x">'
                    '<script>console.error("logged"); undefined_function();</script>')
    browser.open(page.as_uri(), 800, 600)
    errors = browser.errors()
    assert any("undefined_function" in e for e in errors), errors
    assert any("logged" in e for e in errors), errors
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
    assert browser.evaluate(BROKEN_IMAGES) == 1


@pytest.mark.parametrize(
    "screen", [
        {"width": 1366, "height": 900},
        {"width": 390, "height": 844, "mobile": True, "scale": 3.0},
    ], ids=["laptop", "phone"],
)
def test_report_renders_without_errors(browser, report_html, screen, tmp_path):
    browser.open(report_html.as_uri(), **screen)
    assert browser.errors() == []
    assert browser.evaluate("document.images.length") > 10
    assert browser.evaluate(BROKEN_IMAGES) == 0
    assert browser.evaluate(OVERFLOW) <= 0, "the page is wider than the screen"
    assert browser.evaluate("document.title") == "Classifier report: tiny"
    shot = browser.screenshot()
    shot.save(tmp_path / "screenshot.png")
    pixels = np.asarray(shot.convert("L"), dtype=np.float64)
    assert shot.width == round(screen["width"] * screen.get("scale", 1.0))
    assert pixels.std() > 20, "the screenshot is nearly uniform"
    # The top of the page is the title and headline: text only, so dark pixels there are glyphs.
    assert (pixels[: len(pixels) // 7] < 128).mean() > 0.005, "no text drawn at the top of the page"
