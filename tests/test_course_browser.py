"""Chapter 01's explorer widget in a real browser.

A JupyterLab server (127.0.0.1, a free port, a token, a temporary root directory) serves a
notebook made of chapters/01_toy_models.ipynb's own cells: its preamble (the Colab/setup
cell and the imports, everything before the first ``## `` section) and the explorer section
(``toy_model_explorer()``).  Headless Chromium, driven by Playwright, opens it, runs it, moves
the "1 - S" slider to dense with the keyboard, and the test asserts that the widget rendered,
that the figure and the printed summary changed (sparse: superposition, more than 2 features
in 2 dimensions; dense: exactly 2), and that no cell wrote a traceback.  Screenshots go to
build/screenshots/.  The server and its kernel are stopped in every case.

Chromium comes from the system (Debian: ``apt-get install chromium``; ``make test`` installs it
when it can); Playwright's own browser download is not used.  Without Chromium the test is
skipped with the reason.  ``CHROMIUM=/path/to/chromium`` picks another binary.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "chapters" / "01_toy_models.ipynb"
NOTEBOOK_NAME = "01_toy_models_explorer.ipynb"
SCREENSHOTS = ROOT / "build" / "screenshots"
WIDGET_CALL = "toy_model_explorer()"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SUMMARY = re.compile(r"(\d+) of (\d+) features represented in (\d+) dimensions")
STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


def find_chromium() -> str | None:
    """$CHROMIUM, else Debian's /usr/bin/chromium, else chromium / chromium-browser on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ---------------------------------------------------------------------------------------
# The notebook: the real chapter's cells


def explorer_notebook(chapter: Path = CHAPTER):
    """The chapter's preamble (cells before the first ``## `` section) and its explorer section.

    The cells are the chapter's own, read from the file, outputs cleared; the explorer
    section is the code cell that calls ``toy_model_explorer()`` and the markdown cell above it.
    """
    nb = nbformat.read(chapter, as_version=4)
    cells = nb.cells
    first_section = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## "))
    preamble = cells[:first_section]
    widget = [i for i, c in enumerate(cells) if c.cell_type == "code" and WIDGET_CALL in c.source]
    assert len(widget) == 1, f"{chapter.name}: expected one cell calling {WIDGET_CALL}, found {len(widget)}"
    explore = [cells[widget[0] - 1], cells[widget[0]]] if cells[widget[0] - 1].cell_type == "markdown" else [cells[widget[0]]]
    chosen = [nbformat.from_dict(dict(c)) for c in [*preamble, *explore]]
    for cell in chosen:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    out = nbformat.v4.new_notebook(metadata=nb.metadata, cells=chosen)
    nbformat.validate(out)
    return out


def test_explorer_notebook_is_the_chapters_setup_imports_and_widget_cells():
    """Cheap, browser-free: the cells the browser test runs are the chapter's own."""
    chapter = nbformat.read(CHAPTER, as_version=4)
    nb = explorer_notebook()
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    chapter_code = [c.source for c in chapter.cells if c.cell_type == "code"]
    assert code[0] == chapter_code[0] and "device = prepare()" in code[0]  # the setup (Colab) cell
    assert all(source in chapter_code for source in code)
    assert WIDGET_CALL in code[-1]
    # the preamble's other cells only import and configure: no exercise, no training
    for source in code[1:-1]:
        assert "NotImplementedError" not in source and "train(" not in source
        ast.parse(source)


# ---------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state not in ("Z", "X")


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen
    processes: list[int] = field(default_factory=list)  # server and descendants seen at shutdown

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def jupyterlab(root: Path, state: Path, timeout: float = 90):
    """Run ``jupyter lab`` on ``root``; stop it and kill its kernels on exit, whatever happens."""
    port, token = free_port(), secrets.token_hex(16)
    for name in ("config", "data", "runtime", "settings", "workspaces"):
        (state / name).mkdir(parents=True, exist_ok=True)
    # no "Would you like to get notified about official Jupyter news?" toast over the output
    notification = state / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(state / "config"),  # no user config leaks in
        JUPYTER_DATA_DIR=str(state / "data"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
    )
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",  # CI runs as root
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run all cells
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = state / "server.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, log, process)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{lab.server_log()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                lab.api("/api/status")
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s:\n{lab.server_log()}")
            time.sleep(0.5)
        yield lab
    finally:
        _stop(lab)


def _stop(lab: Lab) -> None:
    """Shut the kernels down through the API, SIGTERM the server, then SIGKILL what is left."""
    process = lab.process
    lab.processes = [process.pid, *_children(process.pid)]  # the kernels are the server's children
    if process.poll() is None:
        with contextlib.suppress(Exception):
            for kernel in lab.api("/api/kernels"):
                lab.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    for pid in lab.processes[1:]:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in lab.processes) and time.monotonic() < deadline:
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------
# The browser


def _widget_cell(page):
    return page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=WIDGET_CALL)


def _summary(cell) -> str:
    text = cell.locator(".jp-Cell-outputArea").inner_text()
    match = SUMMARY.search(text)
    return match.group(0) if match else ""


def _images(cell) -> list[str]:
    return cell.locator(".jp-OutputArea img").evaluate_all("imgs => imgs.map(img => img.src)")


def test_chapter01_explorer_widget_in_chromium(tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian/Ubuntu: `apt-get install chromium`, which `make test` "
                    "runs when it is root); the real-browser test needs it")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: `pip install -e '.[dev]'` (or `make setup`)")

    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(explorer_notebook(), root / NOTEBOOK_NAME)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page_errors: list[str] = []

    with jupyterlab(root, tmp_path / "state") as lab:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda error: page_errors.append(str(error)))

                def context() -> str:
                    return f"page errors: {page_errors}\nserver log (end):\n{lab.server_log()}"

                try:
                    page.goto(f"{lab.url}/lab/tree/{NOTEBOOK_NAME}?token={lab.token}", wait_until="domcontentloaded")
                    before_summary, before_images, after_summary, after_images = _drive(page, context)
                except PlaywrightError as error:  # a timeout: show what the page and server looked like
                    page.screenshot(path=str(SCREENSHOTS / "chapter01_widget_failure.png"))
                    raise AssertionError(f"{error}\nscreenshot: build/screenshots/chapter01_widget_failure.png\n"
                                         f"{context()}") from None
            finally:
                browser.close()
    # the server and its kernel are gone
    assert lab.processes and len(lab.processes) >= 2, "the kernel should have been a child of the server"
    assert not [pid for pid in lab.processes if _alive(pid)], "server or kernel still running"

    sparse, dense = SUMMARY.search(before_summary), SUMMARY.search(after_summary)
    assert sparse and dense, (before_summary, after_summary)
    assert int(sparse.group(1)) > 2, f"sparse features (1 - S = 0.05) superpose: {before_summary}"
    assert int(dense.group(1)) == 2, f"dense features keep m = 2: {after_summary}"
    assert len(before_images) == len(after_images) == 2
    assert before_images != after_images, "the figures did not change after the slider moved"


def run_all_cells_when_idle(page) -> None:
    """Wait until JupyterLab's current notebook has an idle kernel, then run all its cells."""
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.sessionContext && panel.sessionContext.session
                           && panel.sessionContext.session.kernel;
            return kernel && kernel.status === "idle";
        }""", timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _drive(page, context) -> tuple[str, list[str], str, list[str]]:
    """Run the notebook, check the widget, press End on the "1 - S" slider; return the summary
    line and figure sources before and after."""
    # JupyterLab loaded the notebook and its kernel is up
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
    run_all_cells_when_idle(page)

    # the widget rendered: sliders, and the first model's summary and figures
    cell = _widget_cell(page)
    handle = cell.locator(".widget-slider").filter(has_text="1 - S").locator(".noUi-handle")
    handle.wait_for(timeout=90_000)
    page.wait_for_function(
        """([selector, pattern]) => [...document.querySelectorAll(selector)]
               .some(el => new RegExp(pattern).test(el.innerText))""",
        arg=[".jp-CodeCell .jp-OutputArea", SUMMARY.pattern], timeout=90_000)
    cell.locator(".jp-OutputArea img").nth(1).wait_for(timeout=30_000)
    before_summary, before_images = _summary(cell), _images(cell)
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "chapter01_widget_before.png"))

    assert page.get_by_text("Error displaying widget").count() == 0, context()
    assert cell.locator(".noUi-handle").count() == 2, "both sliders (1 - S, importance decay)"
    readout = cell.locator(".widget-slider").filter(has_text="1 - S").locator(".widget-readout")
    assert readout.inner_text().strip() == "0.050"

    # move "1 - S" to its maximum (dense features) with the keyboard: End on the handle
    handle.focus()
    page.keyboard.press("End")
    page.wait_for_function(
        """([selector, pattern, before]) => [...document.querySelectorAll(selector)]
               .some(el => { const m = new RegExp(pattern).exec(el.innerText);
                             return m && m[0] !== before; })""",
        arg=[".jp-CodeCell .jp-OutputArea", SUMMARY.pattern, before_summary], timeout=90_000)
    cell.locator(".jp-OutputArea img").nth(1).wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # let the redrawn images finish decoding for the screenshot
    after_summary, after_images = _summary(cell), _images(cell)
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "chapter01_widget.png"))

    assert readout.inner_text().strip() == "1.000"
    assert page.get_by_text("Error displaying widget").count() == 0, context()
    prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert prompts and all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts), prompts
    stderr = page.locator(STDERR_OUTPUT).all_inner_texts()
    assert not any("Traceback" in text or "Error" in text for text in stderr), stderr
    assert "Traceback" not in page.locator(".jp-Notebook").inner_text()
    return before_summary, before_images, after_summary, after_images


# ---------------------------------------------------------------------------------------
# Chapter 05's latent browser: a small hand-made cache, the picker driven from the keyboard

LATENT_NOTEBOOK_NAME = "05_latent_browser.ipynb"
LATENT_BROWSER_CELL = '''\
import torch
from course_utils.widgets import latent_browser

tokens = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "and", "a", "cat", "ran"],
          ["<b>", "bold", "&", "cat", '"', "x"], ["cat", "is", "here", "ok", "so", "fine"],
          ["no", "pets", "here", "at", "all", "cat"]]
acts = torch.zeros(5, 6, 3)  # latent 0 fires on "cat", latent 1 on "<b>" and a few more, latent 2 is dead
for (s, p), value in {(3, 0): 4.0, (2, 3): 3.0, (0, 1): 2.0, (1, 4): 1.0, (4, 5): 0.5}.items():
    acts[s, p, 0] = value
acts[2, 0, 1], acts[2, 1, 1], acts[0, 0, 1] = 1.5, 0.75, 0.75
vocab = ["cat", "dog", "mat", "<b>", "the"]
logit_weights = torch.tensor([[3.0, -1.0, 0.5, 0.0, -2.0], [0.0, 0.1, 0.2, 0.3, 0.4], [0.0] * 5])
latent_browser(acts, tokens, logit_weights, vocab)'''


def test_latent_browser_widget_in_chromium(tmp_path):
    """The latent browser renders its shaded contexts and histogram, and follows its picker:
    latent 0 ("cat"), then 2 (dead: a message and a "never fires" panel), 7 (out of range: a
    message, no histogram, no traceback) and 1 (whose top token is the literal text "<b>", escaped, not markup)."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian/Ubuntu: `apt-get install chromium`); the real-browser "
                    "test needs it")
    from playwright.sync_api import sync_playwright

    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LATENT_BROWSER_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / LATENT_NOTEBOOK_NAME)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page_errors: list[str] = []
    pane = ".jp-CodeCell .widget-html .latent-browser, .jp-CodeCell .widget-html .latent-error"

    def pane_text(page) -> str:
        return page.locator(".jp-CodeCell .widget-html").first.inner_text()

    def pick(page, latent: int, expected: str) -> None:
        box = page.locator(".jp-CodeCell .widget-text input").first
        box.fill(str(latent))
        box.press("Enter")
        page.wait_for_function("([selector, text]) => [...document.querySelectorAll(selector)]"
                               ".some(el => el.innerText.includes(text))", arg=[".jp-CodeCell .widget-html", expected],
                               timeout=30_000)

    with jupyterlab(root, tmp_path / "state") as lab:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda error: page_errors.append(str(error)))
                page.goto(f"{lab.url}/lab/tree/{LATENT_NOTEBOOK_NAME}?token={lab.token}",
                          wait_until="domcontentloaded")
                run_all_cells_when_idle(page)
                page.locator(pane).first.wait_for(timeout=90_000)
                images = page.locator(".jp-CodeCell .jp-OutputArea img")
                images.first.wait_for(timeout=30_000)
                first_image = images.first.get_attribute("src")
                text = pane_text(page)
                marked = page.locator(".jp-CodeCell .widget-html span[title='4.000']").first
                style = marked.evaluate("el => { const s = getComputedStyle(el); "
                                        "return [s.fontWeight, s.textDecorationLine, s.backgroundColor]; }")
                page.screenshot(path=str(SCREENSHOTS / "chapter05_latent_browser.png"))

                new_image = ("(before) => { const img = document.querySelector('.jp-CodeCell .jp-OutputArea img');"
                             " return img && img.src !== before; }")
                pick(page, 2, "a dead latent")  # the histogram becomes the "never fires" panel
                page.wait_for_function(new_image, arg=first_image, timeout=30_000)
                pick(page, 7, "Cannot show latent 7")  # no histogram at all
                page.wait_for_function("() => document.querySelectorAll('.jp-CodeCell .jp-OutputArea img')"
                                       ".length === 0", timeout=30_000)
                out_of_range = pane_text(page)
                pick(page, 1, "latent 1 fires")
                page.wait_for_function(new_image, arg=first_image, timeout=30_000)
                latent1 = pane_text(page)
                page.screenshot(path=str(SCREENSHOTS / "chapter05_latent_browser_latent1.png"))
                errors = page.get_by_text("Error displaying widget").count()
                stderr = page.locator(STDERR_OUTPUT).all_inner_texts()
                notebook = page.locator(".jp-Notebook").inner_text()
            finally:
                browser.close()

    assert "latent 0 fires on 16.67% of 30 tokens (5); max activation 4" in text
    assert "promotes: cat (+3.00), mat (+0.50)" in text and "suppresses: the (-2.00)" in text
    assert style == ["700", "underline", "rgb(255, 140, 0)"], style  # the top token: bold, underlined, opaque
    assert out_of_range.strip() == "Cannot show latent 7: latent must be in [0, 3), got 7"
    assert "<b>" in latent1 and "latent 1 fires on 10.00% of 30 tokens" in latent1  # the token, shown as text
    assert errors == 0 and not page_errors, page_errors
    assert not any("Traceback" in t or "Error" in t for t in stderr), stderr
    assert "Traceback" not in notebook


# ---------------------------------------------------------------------------------------
# Chapter 06's fact editor: the "roomy" fact model, a subject typed in, an edit applied and undone

FACT_EDITOR_NOTEBOOK_NAME = "06_fact_editor.ipynb"
FACT_EDITOR_CELL = """\
from course_utils import facts, rome, widgets
model, fact_set, vocab = facts.load_fact_model("roomy")
C = rome.estimate_key_covariance(model, 0, fact_set.training_tokens(), pad_id=vocab.index["."])
editor = widgets.fact_editor(model, fact_set, C, layer=0)
editor"""


def test_fact_editor_widget_in_chromium(tmp_path):
    """The fact editor renders the default subject's answer and follows its subject box: another
    real name (its trained answer), an unknown name (the example names, "Apply edit" disabled, no
    traceback), the first name again; "Apply edit" shows the edit's efficacy and the moved facts,
    "Undo" says it undid the edit."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian/Ubuntu: `apt-get install chromium`); the real-browser "
                    "test needs it")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    from course_utils import facts

    _, fact_set, _ = facts.load_fact_model("roomy")
    relation = facts.RELATIONS[0].name
    first, other = fact_set.subject_name(0), fact_set.subject_name(1)  # the box starts on subject 0
    first_answer, other_answer = fact_set.answer_word(0, 0), fact_set.answer_word(1, 0)
    assert first_answer != other_answer, "pick two subjects with different trained answers"
    unknown = "nobody at all"
    assert all(fact_set.subject_name(s) != unknown for s in range(fact_set.n_subjects))

    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FACT_EDITOR_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / FACT_EDITOR_NOTEBOOK_NAME)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page_errors: list[str] = []
    panes = ".jp-CodeCell .widget-html"

    def wait_text(page, text: str, timeout: float = 30_000) -> None:
        page.wait_for_function("([selector, text]) => [...document.querySelectorAll(selector)]"
                               ".some(el => el.innerText.includes(text))", arg=[panes, text], timeout=timeout)

    def answer_pane(page) -> str:
        return page.locator(".jp-CodeCell .widget-html").filter(has_text="prompt:").first.inner_text()

    def type_subject(page, name: str) -> None:  # what a user does: replace the text, press Enter
        box = page.locator(".jp-CodeCell .widget-text input").first
        box.fill(name)
        box.press("Enter")

    with jupyterlab(root, tmp_path / "state") as lab:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda error: page_errors.append(str(error)))
                try:
                    page.goto(f"{lab.url}/lab/tree/{FACT_EDITOR_NOTEBOOK_NAME}?token={lab.token}",
                              wait_until="domcontentloaded")
                    run_all_cells_when_idle(page)
                    # the first render: model load and covariance in the kernel
                    page.locator(".jp-CodeCell .fact-answer").first.wait_for(timeout=90_000)
                    apply = page.locator(".jp-CodeCell button.widget-button").filter(has_text="Apply edit")
                    undo = page.locator(".jp-CodeCell button.widget-button").filter(has_text="Undo")
                    apply.wait_for(timeout=30_000)
                    initial = answer_pane(page)
                    undo_disabled_at_start = undo.is_disabled()

                    type_subject(page, other)
                    wait_text(page, f"trained answer: {other_answer}")
                    other_pane = answer_pane(page)

                    type_subject(page, unknown)
                    wait_text(page, f'No subject is called "{unknown}"')
                    unknown_text = page.locator(".jp-CodeCell .fact-unknown").first.inner_text()
                    # the message and the button's state reach the page as separate widget
                    # updates: give the second one a moment (seen lagging on a loaded machine)
                    try:
                        page.wait_for_function("(el) => el.disabled", arg=apply.element_handle(), timeout=10_000)
                    except PlaywrightError:
                        pass
                    apply_disabled_when_unknown = apply.is_disabled()

                    type_subject(page, first)
                    wait_text(page, f"trained answer: {first_answer}")
                    page.wait_for_function("(el) => !el.disabled", arg=apply.element_handle(), timeout=30_000)
                    first_pane = answer_pane(page)

                    apply.click()
                    wait_text(page, "other facts changed their top-1 answer", timeout=60_000)
                    wait_text(page, "Edit 1 applied in place to block 0")
                    moved = page.locator(".jp-CodeCell .fact-moved").first.inner_text()
                    page.wait_for_function("(el) => !el.disabled", arg=undo.element_handle(), timeout=30_000)
                    page.locator(".jp-CodeCell .fact-moved").first.scroll_into_view_if_needed()
                    page.screenshot(path=str(SCREENSHOTS / "chapter06_fact_editor.png"))

                    undo.click()
                    wait_text(page, f"Undid the edit of {first} / {relation}", timeout=60_000)
                    status = page.locator(".jp-CodeCell .fact-info").first.inner_text()
                    page.wait_for_function("() => !document.querySelector('.jp-CodeCell .fact-moved')",
                                           timeout=30_000)
                    undo_disabled_after = undo.is_disabled()
                    wait_text(page, f"trained answer: {first_answer}")
                    page.wait_for_function("([selector, text]) => [...document.querySelectorAll(selector)]"
                                           ".some(el => el.innerText.includes(text) && el.innerText.includes("
                                           "'rank 1)'))", arg=[panes, f"{first} is"], timeout=30_000)
                    undone_pane = answer_pane(page)
                    errors = page.get_by_text("Error displaying widget").count()
                    widget_errors = page.locator(".jp-CodeCell .fact-error").all_inner_texts()
                    stderr = page.locator(STDERR_OUTPUT).all_inner_texts()
                    notebook = page.locator(".jp-Notebook").inner_text()
                except PlaywrightError as error:  # a timeout: show what the page and the server looked like
                    page.screenshot(path=str(SCREENSHOTS / "chapter06_fact_editor_failure.png"))
                    raise AssertionError(f"{error}\nscreenshot: build/screenshots/chapter06_fact_editor_failure.png"
                                         f"\npage errors: {page_errors}\nserver log (end):\n{lab.server_log()}"
                                         ) from None
            finally:
                browser.close()

    # the default subject (subject 0) is shown first; typing another real name redraws the pane
    assert f"{first} is" in initial and f"trained answer: {first_answer}" in initial, initial
    assert undo_disabled_at_start
    assert f"{other} is" in other_pane and f"trained answer: {other_answer}" in other_pane, other_pane
    assert re.search(rf"1\.\s*{re.escape(other_answer)}\s", other_pane), f"top-1 is the trained answer: {other_pane}"
    # an unknown name: a message with example names, nothing to edit
    assert f'No subject is called "{unknown}". Try one of "{first}", "{other}"' in unknown_text, unknown_text
    assert apply_disabled_when_unknown
    assert f"{first} is" in first_pane and f"trained answer: {first_answer}" in first_pane, first_pane
    # the edit: its efficacy and the other facts that moved
    assert f"Edited {first} / {relation}: {first_answer} → " in moved, moved
    assert re.search(r"efficacy \d\.\d\d \(top-1 \d\.\d\d, p\(new\) [\d.]+, p\(old\) [\d.]+\)", moved), moved
    assert re.search(r"\d+ of \d+ other facts changed their top-1 answer\.", moved), moved
    # undone
    undone = rf"Undid the edit of {re.escape(first)} / {relation} → \S+ \(0 left\)\."
    assert re.fullmatch(undone, status.strip()), status
    assert undo_disabled_after
    assert f"{first} is" in undone_pane and re.search(rf"1\.\s*{re.escape(first_answer)}\s", undone_pane), undone_pane
    assert errors == 0 and not page_errors, page_errors
    assert not widget_errors, widget_errors
    assert not any("Traceback" in t or "Error" in t for t in stderr), stderr
    assert "Traceback" not in notebook
