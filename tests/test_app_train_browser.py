"""The Train page served for real and driven by headless Chromium: fill the form, press Train,
watch the epochs arrive, find the model in the other page; train the same again (nothing to
do); stop a run and train again."""

from __future__ import annotations

import json
import re

import pytest

from browser import Browser, chromium, served_app, wait_until
from helpers import snakemake, workflow_env, write_synthetic_dataset
from test_app_train import app_workflow

pytestmark = pytest.mark.slow

# Batch size 1 on a few thousand images: an epoch lasts long enough to be seen, and to be stopped.
FORM = {"hidden": "32", "batch_size": "1"}


@pytest.fixture
def workdir(tmp_path):
    """A workflow copy on a synthetic dataset, its baseline trained (so the report is rebuilt after a Train)."""
    source = write_synthetic_dataset(tmp_path / "idx", n_train=3000, n_test=200)
    workdir = app_workflow(tmp_path / "wf", source)
    snakemake(workdir)
    return workdir


class Page:
    """The app in Chromium, with the few gestures the Train page needs."""

    def __init__(self, browser: Browser):
        self.browser = browser

    def text(self) -> str:
        return self.browser.evaluate("document.body.innerText")

    def wait_text(self, pattern: str, timeout: float = 120.0) -> re.Match:
        return wait_until(lambda: re.search(pattern, self.text()), timeout, what=repr(pattern))

    def click(self, selector: str, text: str) -> None:
        """Click the first `selector` reading `text`, once the page shows one."""
        wait_until(lambda: self.browser.evaluate(f"""(() => {{
            const el = [...document.querySelectorAll({json.dumps(selector)})].find(e => e.innerText.trim() === {json.dumps(text)});
            if (el) el.click(); return !!el; }})()"""), what=f"a {selector} reading {text!r}")

    def press(self, selector: str) -> None:
        """A real mouse click in the middle of the first element matching `selector`."""
        x, y = wait_until(lambda: self.browser.evaluate(f"""(() => {{
            const r = document.querySelector({json.dumps(selector)})?.getBoundingClientRect();
            return r ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()"""), what=selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def choose_page(self, name: str) -> None:
        wait_until(lambda: self.browser.evaluate("!!document.querySelector('[role=radiogroup]')"), what="the page radio")
        self.click("label", name)

    def type_into(self, label: str, value: str) -> None:
        """Type into the input labelled `label` as a user would: select what is there, type over it."""
        wait_until(lambda: self.browser.evaluate(f"!!document.querySelector('input[aria-label={json.dumps(label)}]')"),
                   what=f"the field {label}")
        self.browser.evaluate(f"(() => {{ const i = document.querySelector('input[aria-label={json.dumps(label)}]'); i.focus(); i.select(); return true; }})()")
        self.browser.call("Input.insertText", session=True, text=value)

    def train(self, name: str, fields: dict[str, str]) -> None:
        self.choose_page("Train")
        self.wait_text("Train a new experiment")
        self.type_into("Experiment name", name)
        for label, value in fields.items():
            self.type_into(label, value)
        # A number field takes what was typed when it loses the focus, as it would to a mouse click.
        self.browser.evaluate("document.activeElement.blur(); true")
        self.click("button", "Train")


def test_train_watch_find_retrain_stop_and_continue(workdir, tmp_path):
    results = workdir / "results"
    with served_app(results, tmp_path / "app.log", env=workflow_env(workdir)) as url:
        browser = Browser(chromium(), tmp_path / "profile")
        try:
            browser.open(url, 1400, 2000)
            page = Page(browser)
            page.train("tiny", {**FORM, "epochs": "20"})
            # Epochs appear while the run goes on: more than one distinct count before the end
            # (20 epochs of about 0.4 s each on an idle machine, against the page's refresh of 1 s).
            seen = set()

            def finished() -> bool:
                text = page.text()
                seen.update(int(n) for n in re.findall(r"epoch (\d+) of 20", text) if "Training tiny" in text)
                return "tiny is trained" in text
            wait_until(finished, 180, what="the end of the run")
            assert len(seen) >= 2, seen
            metrics = json.loads((results / "synthetic/tiny/metrics.json").read_text())
            assert f"test accuracy {metrics['test_accuracy']:.2%}" in page.text()
            assert "| tiny" in (results / "synthetic/report.md").read_text()

            # In the other page: on the leaderboard, and to try on an image.
            page.choose_page("Models")
            page.wait_text("Test accuracy")
            page.press("[data-testid=stSidebar] [data-testid=stSelectbox] input")
            wait_until(lambda: browser.evaluate("document.querySelectorAll('[role=option]').length"), what="the model list")
            page.click("[role=option]", "synthetic / tiny")
            page.wait_text(re.escape(f"{metrics['test_accuracy']:.2%}"))
            page.click("[role=tab]", "Learning curves")
            board = wait_until(lambda: browser.evaluate(
                "[...document.querySelectorAll('[data-testid=stDataFrame] [role=gridcell]')].map(c => c.innerText)"),
                what="the leaderboard")
            assert "tiny" in board and "baseline" in board

            # The same settings again: nothing is trained.
            model = results / "synthetic/tiny/model.npz"
            stamp = model.stat().st_mtime_ns
            page.train("tiny", {**FORM, "epochs": "20"})
            page.wait_text("Nothing to train: tiny is trained with these settings already")
            assert model.stat().st_mtime_ns == stamp

            # Leave the page during a run and come back: the run goes on. Stop it, then Train
            # again (fewer epochs, so that the test stays short): it completes.
            page.train("long", {**FORM, "epochs": "500"})
            page.wait_text(r"epoch \d+ of 500")
            browser.open(url, 1400, 2000)
            page.choose_page("Train")
            page.wait_text(r"Training long(.*\n)*epoch \d+ of 500")
            page.click("button", "Stop training")
            page.wait_text("The run of long was stopped")
            assert not (results / "synthetic/long/model.npz").exists()
            page.train("long", {**FORM, "epochs": "3"})
            page.wait_text("long is trained", timeout=180)
            assert json.loads((results / "synthetic/long/metrics.json").read_text())["epochs_run"] == 3
            assert not [e for e in browser.errors() if "uncaught" in e]
        finally:
            browser.close()
