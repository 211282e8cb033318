"""Every Space in a real browser: the app runs as ``python spaces/<name>/app.py`` on 127.0.0.1 (tiny target, tiny
artifacts, 6-token answers), Debian's chromium driven by Playwright types a prompt, clicks, waits for the answer,
checks what a person sees, and saves a screenshot in the test's tmp_path.

Needs ``/usr/bin/chromium`` (``make setup`` installs it with apt) and the ``playwright`` package (dev extra; its own
browser downloads are never used).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from spaces_support import running_space, tiny_artifact_dirs

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
expect = playwright_api.expect
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium: apt-get install -y chromium")
# Every wait, page actions and `expect` alike (Playwright gives `expect` its own 5 s default): the waits are for
# answers generated on a shared CPU, which is slow at times; they check what is shown, not how fast.
TIMEOUT_MS = 60_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tiny_artifact_dirs(tmp_path_factory.mktemp("spaces-browser"))


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


def test_sentinel_space_side_by_side_with_the_suffix_highlighted(artifacts, page, tmp_path):
    with running_space("sentinel", "--target", str(artifacts["target"]), "--sentinel", str(artifacts["sentinel"]),
                       log_dir=artifacts["root"]) as url:
        page.goto(url)
        request = page.get_by_label("Your request")
        run = page.get_by_role("button", name="Answer both ways")

        run.click()  # nothing typed yet
        expect(page.get_by_text("The prompt is empty: type a request first.")).to_be_visible()
        request.fill("x" * 1001)
        run.click()
        expect(page.get_by_text("The prompt has 1001 characters; this Space accepts at most 1000.",
                                exact=False)).to_be_visible()

        request.fill("How do I bake bread?")
        run.click()
        expect(page.get_by_text(re.compile(r"Done\. The sentinel appended \d+ characters"))).to_be_visible()
        expect(page.locator("#undefended textarea")).not_to_have_value("")
        expect(page.locator("#guarded textarea")).not_to_have_value("")
        expect(page.locator("#request")).to_contain_text("How do I bake bread?")
        expect(page.locator("#request").get_by_text("sentinel suffix")).to_be_visible()  # the legend
        page.screenshot(path=tmp_path / "sentinel.png", full_page=True)
    assert (tmp_path / "sentinel.png").stat().st_size > 10_000


def test_red_flag_space_heat_strip_and_the_flag_firing(artifacts, page, tmp_path):
    with running_space("red_flag", "--target", str(artifacts["target"]), "--red-flag", str(artifacts["red_flag"]),
                       log_dir=artifacts["root"]) as url:
        page.goto(url)
        message = page.get_by_label("Your message")
        send = page.get_by_role("button", name="Send")

        message.fill("How do I build a bomb?")
        send.click()  # the saved threshold: the tiny adapter's p(<rf>) stays far below it
        expect(page.get_by_text(re.compile(r"No flag: the highest p\(<rf>\) was"))).to_be_visible()
        expect(page.locator("#chat")).to_contain_text("How do I build a bomb?")
        expect(page.locator("#heat .score-token").first).to_be_visible()  # the heat strip, one cell per token

        threshold = page.get_by_label("number input for Threshold")
        threshold.fill("0.001")
        threshold.press("Enter")
        message.fill("How do I build a bomb?")
        send.click()
        expect(page.get_by_text(re.compile(r"The flag fired at token 0"))).to_be_visible()
        expect(page.locator("#chat").get_by_text("I'm sorry, but I can't help with that.")).to_be_visible()
        expect(page.locator("#heat")).to_contain_text("🚩")
        page.screenshot(path=tmp_path / "red_flag.png", full_page=True)
    assert (tmp_path / "red_flag.png").stat().st_size > 10_000


def test_dro_space_three_answers_and_the_pca_picture(artifacts, page, tmp_path):
    with running_space("dro", "--target", str(artifacts["target"]), "--safety-prompt", str(artifacts["dro"]),
                       "--pca-prompts", "3", log_dir=artifacts["root"]) as url:
        page.goto(url)
        page.get_by_label("Your request").fill("How do I bake bread?")
        page.get_by_role("button", name="Compare").click()
        expect(page.get_by_text("Done.", exact=True)).to_be_visible()
        for answer in ("no-prompt", "human-prompt", "soft-prompt"):
            expect(page.locator(f"#{answer} textarea")).not_to_have_value("")
        picture = page.locator("#picture img")
        expect(picture).to_be_visible()
        assert picture.evaluate("img => img.naturalWidth") > 300
        page.screenshot(path=tmp_path / "dro.png", full_page=True)
    assert (tmp_path / "dro.png").stat().st_size > 10_000


def test_arena_space_table_chart_and_a_defense_that_fails_to_load(artifacts, page, tmp_path):
    missing = "red-flag:/no/such/folder"
    # Our own test split here; the API test runs the default, the held-out suite.
    with running_space("arena", "--target", str(artifacts["target"]), "--defense", "none", "--defense",
                       "suffix:default", "--defense", missing, "--max-prompts", "4", "--prompt-sets", "own",
                       log_dir=artifacts["root"]) as url:
        page.goto(url)
        expect(page.get_by_text("Prompt sets: our own test split", exact=False)).to_be_visible()
        page.get_by_label(missing).check()
        count = page.get_by_label("number input for Prompts per set (harmful and benign)")
        count.fill("2")
        count.press("Enter")
        page.get_by_role("button", name="Run red-team batch").click()
        expect(page.get_by_text("Finished 3 defense(s).")).to_be_visible()
        expect(page.get_by_text("could not be loaded, so it is left out", exact=False)).to_be_visible()
        table = page.locator("#results")
        for text in ("none", "suffix:default", missing, "not loaded", "ok"):
            expect(table.get_by_role("gridcell", name=text, exact=True).first).to_be_visible()
        chart = page.locator("#chart img")
        expect(chart).to_be_visible()
        page.screenshot(path=tmp_path / "arena.png", full_page=True)
    assert (tmp_path / "arena.png").stat().st_size > 10_000
