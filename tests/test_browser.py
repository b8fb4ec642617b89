"""The notebooks in a real browser, as a user meets them: JupyterLab started here (on
127.0.0.1, a free port, a random token), headless Chromium driven by Selenium through the
system chromedriver (Debian's ``chromium`` + ``chromium-driver``, which ``make test``
installs where it can; nothing is downloaded at run time), Run → Run All Cells from the
menu, then the widget of notebook 06 driven by its controls.

* notebook 06 at preset smoke, on results it made itself (a smoke grid with real
  artifacts): the controls exist; changing ipc, then modality, redraws the view with
  images and a table that says "saved artifact" for every distilled method;
* notebooks 02 and 04 at smoke: an ``<img>`` per figure cell, no error output;
* the record: notebook 06 on the committed ``results/`` (``preset="cpu"``), as a fresh
  clone shows it; its screenshots are the figures of record
  (``MDD_SCREENSHOTS=figures pytest tests/test_browser.py -k record`` writes
  ``figures/06_browser_<flag>_ipc<ipc>.png``).

Each notebook runs as a papermill-parameterised copy in a temporary folder (the
committed notebooks and their ``parameters`` cells stay as they are). Screenshots go to
``$MDD_SCREENSHOTS`` when set (relative paths start at the project root), else to a
temporary folder; the path is printed. Skipped, saying why, only where no Chromium and
chromedriver are installed (``MDD_CHROMIUM`` / ``MDD_CHROMEDRIVER`` name others).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REAL_ROOT

CHROMIUM = os.environ.get("MDD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("MDD_CHROMEDRIVER") or shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no browser: the browser test needs Chromium and chromedriver (Debian: "
                "`apt-get install chromium chromium-driver`, which `make test` runs as root); "
                f"found chromium={CHROMIUM}, chromedriver={CHROMEDRIVER}", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the `test` extra")
pytest.importorskip("jupyterlab", reason="jupyterlab is in the `test` extra")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

from mdd import notebooks as nb, records  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1400", "--hide-scrollbars"]
#: JupyterLab settings for a test: every cell rendered (no windowing, so cells below the
#: fold are in the DOM), no news or update checks (the network is closed).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}
RUN_TIMEOUT = 420   # seconds for Run All Cells of one notebook at smoke
DISTILLED = ("mtt", "ptm", "ptm+dom")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def real_data() -> Path:
    if not (REAL_ROOT / "breastmnist.npz").is_file():
        pytest.skip(f"real MedMNIST files not found in {REAL_ROOT}")
    return REAL_ROOT


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def shots(work, request) -> Path:
    folder = (nb.resolve_path(os.environ["MDD_SCREENSHOTS"]) if os.environ.get("MDD_SCREENSHOTS")
              else work / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    say = tr.write_line if tr is not None else print
    say(f"\nbrowser screenshots: {folder}")
    yield folder
    say(f"\nbrowser screenshots: {folder} ({len(list(folder.glob('*.png')))} png)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server serving ``folder``; ``api(path)`` calls its REST API."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.token, self.port = folder, secrets.token_hex(16), _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={folder}",
               "--LabApp.extension_manager=readonly", "--LabApp.news_url=None"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = folder / "jupyterlab.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("api/status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"JupyterLab did not start; see {self.log}:\n"
                                       + self.log.read_text()[-3000:])
                time.sleep(0.3)

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        for k in self.api("api/kernels"):
            self.api(f"api/kernels/{k['id']}", method="DELETE")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)   # the server shuts its kernels down
            try:
                self.proc.wait(5)
                return
            except subprocess.TimeoutExpired:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)   # its own session: server + kernels
                self.proc.wait(5)


@pytest.fixture(scope="module")
def lab(work):
    folder = work / "lab"
    for name, value in LAB_SETTINGS.items():
        path = folder / ".settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(folder / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(folder / ".workspaces"),
           "JUPYTER_CONFIG_DIR": str(folder / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(folder / ".runtime")}
    server = Lab(folder, env)
    yield server
    server.stop()


@pytest.fixture
def browser(work, lab, shots, request):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chrome-profile-", dir=work)   # fresh for every test
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    # an explicit chromedriver: Selenium Manager (which would download one) is not used
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER,
                                                            log_output=str(work / "chromedriver.log")))
    driver.set_script_timeout(30)
    failures = request.session.testsfailed
    yield driver
    if request.session.testsfailed > failures:
        _keep_failure(driver, shots, request.node.name)
    driver.quit()
    lab.shutdown_kernels()


def _keep_failure(driver, shots: Path, name: str) -> None:
    """The page as it was when a test failed (screenshot + HTML), for CI artifacts."""
    stem = "failed_" + "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:80]
    try:
        driver.save_screenshot(str(shots / f"{stem}.png"))
        (shots / f"{stem}.html").write_text(driver.page_source)
    except Exception:   # noqa: BLE001 - best effort, the failure itself is reported
        pass


@pytest.fixture(scope="module")
def smoke_out(work, real_data) -> Path:
    """The notebooks' ``out`` at smoke, holding notebook 01's experts and the smoke grid
    that notebook 06 reads as its own results: BreastMNIST at ipc 1 and 2 and
    PneumoniaMNIST at ipc 1, random and distilled, each distilled row with its artifact
    recorded beside the results (mdd.records)."""
    from mdd import diagnostics as dg
    out = work / "out"
    own = nb.results_folder(out, "smoke")
    for flag, ipcs, methods in (("breastmnist", [1, 2], ["random", "mtt", "ptm"]),
                                ("pneumoniamnist", [1], ["random", "mtt"])):
        experts = nb.ensure_experts(flag, "smoke", out, root=real_data, workers=0)
        dg.benchmark_grid(flag, ipcs, methods, "smoke", own, experts=experts, root=real_data)
    return out


def parameterised(book: str, folder: Path, **params) -> str:
    """A papermill-parameterised copy of ``notebooks/<book>`` in ``folder``; its name."""
    from papermill.iorw import load_notebook_node, write_ipynb
    from papermill.parameterize import parameterize_notebook
    node = parameterize_notebook(load_notebook_node(str(nb.notebook_dir() / book)), params)
    write_ipynb(node, str(folder / book))
    return book


# ---------------------------------------------------------------- driving JupyterLab
def wait_for(what: str, check, timeout: float = 60, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except StaleElementReferenceException:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(every)


def _status(driver) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) "
                                                  ".jp-Notebook-ExecutionIndicator")
    return found[0].get_attribute("data-status") if found else ""


def open_notebook(driver, lab: Lab, name: str) -> None:
    """Open ``name``, wait for its kernel (server side and in the page) to be idle, and
    make it the current widget (the Run menu acts on that)."""
    driver.get(lab.url(name))

    def kernel_idle() -> bool:
        states = [s["kernel"]["execution_state"] for s in lab.api("api/sessions")
                  if s.get("path", "").endswith(name) and s.get("kernel")]
        return states == ["idle"] and _status(driver) == "idle"
    wait_for(f"{name} to open with an idle kernel", kernel_idle, timeout=180)
    cell = wait_for("the first cell", lambda: driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputPrompt"))
    cell[0].click()
    wait_for(f"{name} to be the current notebook", lambda: any(
        e.text.startswith("Python 3") for e in driver.find_elements(
            By.CSS_SELECTOR, ".jp-StatusBar-Item:not(.lm-mod-hidden) .jp-StatusBar-TextItem")),
        timeout=30)


def menu(driver, top: str, command: str) -> None:
    """Click ``top`` in the menu bar, then the item running ``command``."""
    labels = driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
    next(e for e in labels if e.text == top).click()
    item = wait_for(f"{top} → {command}", lambda: driver.find_elements(
        By.CSS_SELECTOR, f'.lm-Menu li.lm-Menu-item[data-command="{command}"]'), timeout=10)
    item[0].click()


def prompts(driver) -> list[str]:
    return [e.text.strip() for e in driver.find_elements(
        By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt")]


def run_all(driver, timeout: float = RUN_TIMEOUT) -> float:
    """Run → Run All Cells, then wait until no cell is queued or running; seconds taken."""
    t0 = time.monotonic()
    menu(driver, "Run", "runmenu:run-all")
    wait_for("the run to start", lambda: "[*]:" in prompts(driver) or _status(driver) == "busy",
             timeout=30, every=0.2)
    quiet = {"n": 0}

    def finished() -> bool:
        done = "[*]:" not in prompts(driver) and _status(driver) == "idle"
        quiet["n"] = quiet["n"] + 1 if done else 0
        return quiet["n"] >= 3
    wait_for("Run All Cells to finish", finished, timeout=timeout, every=1.0)
    return time.monotonic() - t0


def save_and_read(driver, lab: Lab, name: str):
    """File → Save, then the notebook as saved (outputs included)."""
    import nbformat
    path = lab.folder / name
    before = path.stat().st_mtime_ns
    menu(driver, "File", "docmanager:save")
    wait_for(f"{name} to be saved", lambda: path.stat().st_mtime_ns != before and not
             driver.find_elements(By.CSS_SELECTOR, ".lm-TabBar-tab.lm-mod-current.jp-mod-dirty"),
             timeout=30)
    return nbformat.read(path, as_version=4)


def assert_ran_clean(book) -> None:
    code = [c for c in book.cells if c.cell_type == "code"]
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(code)
              for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error outputs in code cells: {errors}"
    assert all(c.execution_count is not None for c in code), \
        [i for i, c in enumerate(code) if c.execution_count is None]


def code_cells(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")


def rendered_images(driver, cell) -> int:
    """How many decoded ``<img>`` the cell's output area shows."""
    imgs = cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
    return sum(bool(driver.execute_script("return arguments[0].complete && "
                                          "arguments[0].naturalWidth > 0", i)) for i in imgs)


def screenshot(driver, element, path: Path) -> Path:
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
    time.sleep(0.3)
    element.screenshot(str(path))
    return path


# ---------------------------------------------------------------- the 06 widget
class CompareWidget:
    """The controls and output of ``compare.compare_widget`` as rendered in the page."""

    def __init__(self, driver):
        self.driver = driver
        boxes = driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-OutputArea-output .widget-vbox")
        assert boxes, "the widget did not render (no ipywidgets VBox in any output)"
        self.box = boxes[-1]
        self.selects = {}
        for el in self.box.find_elements(By.CSS_SELECTOR, ".widget-dropdown, .widget-select-multiple"):
            label = el.find_element(By.CSS_SELECTOR, "label").text.strip()
            self.selects[label] = el.find_element(By.CSS_SELECTOR, "select")

    def options(self, label: str) -> list[str]:
        return [o.get_attribute("value") for o in Select(self.selects[label]).options]

    def image(self) -> str:
        """The src of the view's decoded image ("" while there is none)."""
        imgs = self.box.find_elements(By.CSS_SELECTOR, ".widget-output img")
        if not imgs or not self.driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", imgs[0]):
            return ""
        return imgs[0].get_attribute("src")

    def table(self) -> list[dict]:
        tables = self.box.find_elements(By.CSS_SELECTOR, ".widget-output table")
        if not tables:
            return []
        head = [th.text.strip() for th in tables[0].find_elements(By.CSS_SELECTOR, "thead th")]
        rows = []
        for tr in tables[0].find_elements(By.CSS_SELECTOR, "tbody tr"):
            cells = [c.text.strip() for c in tr.find_elements(By.CSS_SELECTOR, "th, td")]
            rows.append(dict(zip(head, cells)))
        return rows

    def text(self) -> str:
        return self.box.find_element(By.CSS_SELECTOR, ".widget-output").text

    def choose(self, label: str, value: str, timeout: float = 120) -> float:
        """Pick ``value`` in the control ``label``; wait until the view is redrawn."""
        before, t0 = self.image(), time.monotonic()
        Select(self.selects[label]).select_by_value(value)
        wait_for(f"the view to redraw after {label} = {value}",
                 lambda: (src := self.image()) and src != before and self.table(), timeout=timeout)
        return time.monotonic() - t0


def assert_view_shows_images(view: CompareWidget, distilled_saved: bool = True) -> list[dict]:
    rows = view.table()
    assert rows, "no table under the view"
    assert "unreadable" not in view.text() and "cannot show" not in view.text(), view.text()
    images = {r["method"]: r["images"] for r in rows}
    assert images.get("random") == "random real subset", images
    assert all(v == "random real subset" for m, v in images.items() if m.startswith("random@")), images
    if distilled_saved:
        assert any(m in images for m in DISTILLED), images
        assert all(images[m] == "saved artifact" for m in images if m in DISTILLED), images
        assert "not saved" not in view.text()
    return rows


# ---------------------------------------------------------------- tests
def test_notebook_06_widget_redraws_with_images(browser, lab, smoke_out, real_data, shots):
    name = parameterised("06_compare.ipynb", lab.folder, preset="smoke", flag="breastmnist",
                         ipc=1, out=str(smoke_out), root=str(real_data),
                         results=str(lab.folder / "no_committed_results"))
    open_notebook(browser, lab, name)
    seconds = run_all(browser)
    assert_ran_clean(save_and_read(browser, lab, name))

    view = CompareWidget(browser)
    assert {"modality", "ipc", "methods"} <= set(view.selects), sorted(view.selects)
    assert view.selects["methods"].get_attribute("multiple") is not None
    assert view.options("modality") == ["breastmnist", "pneumoniamnist"]
    assert view.options("ipc") == ["1", "2"]
    # the grid's random@<method> controls come right after their method
    assert view.options("methods") == ["random", "mtt", "random@mtt", "ptm", "random@ptm"]
    wait_for("the first view", view.image, timeout=60)
    assert_view_shows_images(view)
    screenshot(browser, view.box, shots / "06_smoke_breastmnist_ipc1.png")

    redraw_ipc = view.choose("ipc", "2")
    rows = assert_view_shows_images(view)
    assert [r["method"] for r in rows] == view.options("methods")
    assert all(r["ACC %"].count(".") == 2 for r in rows)   # "41.0 ± 0.0": %, one decimal
    assert all(r["ΔACC vs random"][:1] in "+-" for r in rows if r["method"] != "random")
    screenshot(browser, view.box, shots / "06_smoke_breastmnist_ipc2.png")

    redraw_flag = view.choose("modality", "pneumoniamnist")
    assert view.options("ipc") == ["1"]
    assert view.options("methods") == ["random", "mtt", "random@mtt"]
    assert [r["method"] for r in assert_view_shows_images(view)] == view.options("methods")
    screenshot(browser, view.box, shots / "06_smoke_pneumoniamnist_ipc1.png")
    browser.save_screenshot(str(shots / "06_smoke_page.png"))
    print(f"06 at smoke: run all {seconds:.0f}s, redraw after ipc {redraw_ipc:.1f}s, "
          f"after modality {redraw_flag:.1f}s")


@pytest.mark.parametrize("book", ["02_instability_diagnostics.ipynb", "04_synthetic_images.ipynb"])
def test_notebook_figures_render(book, browser, lab, smoke_out, real_data, shots):
    name = parameterised(book, lab.folder, preset="smoke", flag="breastmnist",
                         out=str(smoke_out), root=str(real_data))
    open_notebook(browser, lab, name)
    seconds = run_all(browser)
    saved = save_and_read(browser, lab, name)
    assert_ran_clean(saved)
    code = [c for c in saved.cells if c.cell_type == "code"]
    figure_cells = [i for i, c in enumerate(code) if "viz.publish(" in c.source]
    assert figure_cells, f"{book} has no figure cells (viz.publish)"
    cells = code_cells(browser)
    assert len(cells) == len(code)
    for i in figure_cells:
        assert any("image/png" in o.get("data", {}) for o in code[i].outputs), \
            f"{book} code cell {i} saved no image/png output"
        assert rendered_images(browser, cells[i]) >= 1, \
            f"{book} code cell {i} ({code[i].source.splitlines()[0]!r}) shows no rendered <img>"
    screenshot(browser, cells[figure_cells[0]], shots / f"{book[:2]}_smoke_first_figure.png")
    print(f"{book} at smoke in the browser: {seconds:.0f}s, {len(figure_cells)} figures")


def test_record_notebook_06_on_committed_results(browser, lab, real_data, work, shots):
    """What a fresh clone shows: notebook 06 on the committed results/ (benchmark.csv
    and the artifacts of record). A distilled row shows its images exactly when its
    artifact is committed; once artifacts of record exist, every distilled row must
    have one. The screenshots are the figures of record (module docstring)."""
    from mdd import compare
    results = compare.load_results("results")
    if results.empty:
        pytest.skip("no committed results/ in this checkout")
    defaults = nb.notebook_parameters(nb.notebook_dir() / "06_compare.ipynb")
    flag, ipc = json.loads(defaults["flag"]), int(defaults["ipc"])
    name = parameterised("06_compare.ipynb", lab.folder, preset="cpu",
                         out=str(work / "record-out"), figures_dir=str(work / "record-figures"),
                         root=str(real_data))
    open_notebook(browser, lab, name)
    run_all(browser)
    assert_ran_clean(save_and_read(browser, lab, name))
    view = CompareWidget(browser)
    wait_for("the first view", view.image, timeout=60)
    any_record = any(isinstance(a, str) and a.startswith(records.RECORDS) for a in results["artifact"])
    for f in [flag] + [x for x in view.options("modality") if x != flag]:
        if f != flag:
            view.choose("modality", f)
            ipcs = [o for o in view.options("ipc") if o.isdigit()]
            if not ipcs:   # a modality with only its full-data ceiling: no images to show
                continue
            chosen = ipc if str(ipc) in ipcs else int(ipcs[-1])
            if str(chosen) != Select(view.selects["ipc"]).first_selected_option.get_attribute("value"):
                view.choose("ipc", str(chosen))
        else:
            chosen = ipc
        rows = compare.select(results, f, chosen)
        want = {r.method: compare.images_note(r.method, r.artifact) for r in rows.itertuples()}
        shown = {r["method"]: r["images"] for r in view.table()}
        assert shown == want, (f, chosen)   # "saved artifact" only where the artifact is here
        if any_record:
            assert all(shown[m] == "saved artifact" for m in shown if m in DISTILLED), (f, shown)
        screenshot(browser, view.box, shots / f"06_browser_{f}_ipc{chosen}.png")
