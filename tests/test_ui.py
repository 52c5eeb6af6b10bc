"""What a user sees in the MLflow UI, checked in a real browser (Debian's Chromium via Playwright).

One tiny sweep (2 jobs) and one single run go into a temporary store through the real command
line; `vaelab.ui.serving` (the code behind `vaelab ui`) serves that store on a free loopback port.
Every check saves a screenshot of what it looked at under the module's temporary folder, printed
when a check fails. With VAELAB_SCREENSHOTS=<folder> the two README pictures are written there
(docs/ui_screenshots.sh does that from real MNIST).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.ui, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    reason = "UI tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"
    if os.environ.get("CI"):  # CI installs it (.ci/run): there a missing browser is a failure
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="UI tests need the playwright package")

EPOCHS = 3
README_SHOTS = os.environ.get("VAELAB_SCREENSHOTS")  # e.g. docs/images: write the README pictures
REAL_MNIST = os.environ.get("VAELAB_UI_MNIST")  # a data.root with real MNIST, for those pictures


def data_overrides(mnist_root: Path) -> list[str]:
    tiny = [a for a in tiny_overrides(mnist_root) if a not in ("tracking=none", "trainer.epochs=1")]
    if REAL_MNIST:
        tiny = [f"data.root={REAL_MNIST}", "data.verify=true", "data.limit=6000", "trainer.batch_size=100",
                "trainer.progress=false"]
    return [*tiny, f"trainer.epochs={EPOCHS}"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, mnist_root: Path) -> Path:
    """vaelab's home after `vaelab --multirun model.latent_dim=2,3` and a plain `vaelab` run (another
    seed: the same config would be one run to vaelab), started side by side through the real
    command line."""
    home = tmp_path_factory.mktemp("ui_home")
    env = {**os.environ, "VAELAB_HOME": str(home)}
    vaelab, args = [sys.executable, "-m", "vaelab"], data_overrides(mnist_root)
    jobs = [subprocess.Popen([*vaelab, "--multirun", *args, "model.latent_dim=2,3"], env=env, cwd=home,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            subprocess.Popen([*vaelab, *args, "trainer.seed=1"], env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for job in jobs:
        out, _ = job.communicate(timeout=600)
        assert job.returncode == 0, out[-3000:]
    return home


@pytest.fixture(scope="module")
def ui(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from vaelab.ui import serving

    log = tmp_path_factory.mktemp("ui_server") / "server.log"
    with serving(f"sqlite:///{store / 'mlflow.db'}", log=log, artifacts=str(store / "mlartifacts")) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui_screenshots")


@pytest.fixture
def page(browser, ui: str, shots: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """The runs page of the experiment, with the assistant panel closed; a screenshot on failure."""
    context = browser.new_context(viewport={"width": 1800, "height": 1250})
    tab = context.new_page()
    tab.set_default_timeout(90_000)  # generous: CI machines and shared cores are slow
    tab.goto(f"{ui}/#/experiments/1/runs")
    tab.get_by_text("mlp-h256-z2-b1.0").first.wait_for(timeout=120_000)
    with contextlib.suppress(sync_api.Error):
        tab.get_by_role("button", name="Close").click(timeout=3000)  # MLflow Assistant, if shown
    try:
        yield tab
    finally:
        failed = getattr(request.node, "ui_failed", True)
        if failed:
            path = shots / f"{request.node.name}-failure.png"
            with contextlib.suppress(sync_api.Error):
                tab.screenshot(path=str(path), full_page=True)
            print(f"UI screenshot at failure: {path}")
        context.close()


def keep(target, shots: Path, name: str, readme: bool = False, **options: object) -> None:
    """A screenshot of what a check looked at; with `readme` and VAELAB_SCREENSHOTS set, also
    the README picture of that name."""
    target.screenshot(path=str(shots / f"{name}.png"), **options)
    if readme and README_SHOTS:
        Path(README_SHOTS).mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(Path(README_SHOTS) / f"{name}.png"), **options)


def row(page, name: str):
    """Every part of the table row of run `name`: the grid draws the pinned name column and the
    other columns as separate row elements that share a row-index."""
    index = page.locator("[role=row]", has_text=name).first.get_attribute("row-index")
    return page.locator(f"[role=row][row-index='{index}']")


def passed(request: pytest.FixtureRequest) -> None:
    request.node.ui_failed = False


def test_the_image_grid_offers_every_keyed_image_and_the_step_slider_changes_the_picture(page, shots, request):
    page.locator("label:has(input[value=CHART])").click()
    page.get_by_text("best/test/loss").first.wait_for()  # the charts have drawn
    page.get_by_role("button", name="Add chart").first.click()
    page.get_by_role("menuitem", name="Image grid").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Images", exact=True).last.click()
    options = page.get_by_role("option")
    options.first.wait_for()
    offered = set(options.all_inner_texts())
    assert {"reconstructions", "samples", "latent_space", "manifold"} <= offered, offered
    for key in ("latent_space", "reconstructions"):  # the two that fit the picture
        page.get_by_role("option", name=key).click()
    page.keyboard.press("Escape")
    # at the grid's default step (0: the untrained model's pictures), with no setting touched
    sync_api.expect(dialog.locator("img")).to_have_count(2)
    dialog.locator("img").last.evaluate("img => img.decode()")
    dialog.get_by_role("switch").click()  # hide the run parameters for the picture: the pictures are the point
    slider = dialog.get_by_role("slider")
    track = slider.locator("xpath=ancestor::*[@data-orientation='horizontal'][last()]").bounding_box()

    def move_to(end: float) -> list[str]:
        page.mouse.click(track["x"] + 2 + end * (track["width"] - 4), track["y"] + track["height"] / 2)
        images = dialog.locator("img")
        sync_api.expect(images).to_have_count(2)
        return [images.nth(i).get_attribute("src") for i in range(2)]

    last = move_to(1.0)
    assert slider.get_attribute("aria-valuenow") == str(EPOCHS)
    first = move_to(0.0)
    assert slider.get_attribute("aria-valuenow") == "0"
    assert all(a != b for a, b in zip(first, last)), "moving the step did not change the pictures"
    assert move_to(1.0) == last  # back at the last epoch, for the screenshot
    dialog.locator("img").last.evaluate("img => img.decode()")
    keep(dialog.locator(".du-bois-light-modal").first if dialog.locator(".du-bois-light-modal").count()
         else dialog, shots, "ui_image_grid", readme=True)
    passed(request)


def test_the_sweep_parent_expands_to_its_children_and_shows_the_best_test_loss(page, shots, request):
    parent = page.locator("[role=row]", has_text="sweep latent_dim (2)")
    parent.locator("button[data-component-id*='runnamecellrenderer']").click()
    for child in ("z2", "z3"):  # named by the values they were given, short enough for the table
        sync_api.expect(page.get_by_text(child, exact=True).first).to_be_visible()
    for metric in ("best/test/loss", "test/loss"):
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder("Search").last.fill(metric)
        page.get_by_text(metric, exact=True).last.click()
        page.keyboard.press("Escape")
    header = page.locator("[role=columnheader]", has_text="best/test/loss")
    sync_api.expect(header.first).to_be_visible()
    col = header.first.get_attribute("col-id")
    value = row(page, "sweep latent_dim (2)").locator(f"[role=gridcell][col-id='{col}']")
    assert float(value.first.inner_text()) > 0
    keep(page, shots, "ui_sweep_parent", readme=True, clip={"x": 0, "y": 0, "width": 1800, "height": 420})
    passed(request)


def test_the_dataset_column_names_the_data_and_the_run_describes_itself(page, ui, shots, request):
    sync_api.expect(row(page, "mlp-h256-z2-b1.0").filter(has_text="mnist train (")).to_have_count(1)
    page.get_by_role("link", name="mlp-h256-z2-b1.0").click()
    sync_api.expect(page.get_by_text("Final results").first).to_be_visible()
    sync_api.expect(page.get_by_text("vae-mlp-h256-z2-b1_0").first).to_be_visible()  # metrics linked to the model
    keep(page, shots, "ui_run_page")
    passed(request)


def test_the_ui_cannot_be_written_through(ui, store):
    """Any local user reaching `vaelab ui` could PUT over a run's model (HTTP 200) and so run code
    as whoever evaluated it. The UI serves the store read-only: writes get 403, nothing changes."""
    import json
    import urllib.error
    import urllib.request

    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{ui}{path}", data=body, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    status, found = call("POST", "/api/2.0/mlflow/runs/search", json.dumps({"experiment_ids": ["1"]}).encode())
    assert status == 200
    runs = json.loads(found)["runs"]
    run_id = runs[0]["info"]["run_id"]
    listed = call("GET", f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=checkpoints")
    assert listed[0] == 200 and "last.pt" in listed[1].decode()
    before = sorted(p.stat().st_mtime_ns for p in (store / "mlartifacts").rglob("*") if p.is_file())
    writes = [
        ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/1/{run_id}/artifacts/checkpoints/last.pt", b"planted"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/planted.pth", b"planted"),
        ("DELETE", f"/api/2.0/mlflow-artifacts/artifacts/1/{run_id}/artifacts/checkpoints/last.pt", None),
        ("POST", "/api/2.0/mlflow/runs/create", json.dumps({"experiment_id": "1"}).encode()),
        ("POST", "/ajax-api/2.0/mlflow/runs/set-tag", json.dumps({"run_id": run_id, "key": "k", "value": "v"}).encode()),
        ("POST", "/api/2.0/mlflow/runs/delete", json.dumps({"run_id": run_id}).encode()),
        ("POST", "/api/2.0/mlflow/experiments/create", json.dumps({"name": "planted"}).encode()),
    ]
    for method, path, body in writes:
        status, reply = call(method, path, body)
        assert status == 403 and b"read-only" in reply, (method, path, status, reply[:200])
    after = sorted(p.stat().st_mtime_ns for p in (store / "mlartifacts").rglob("*") if p.is_file())
    assert after == before and not list((store / "mlartifacts").rglob("planted*"))
    # a pickle planted on disk over a logged model (by whoever can write the files) is served as bytes, never run
    from tests.test_trust import plant

    marker, [pickled] = store / "pwned", list((store / "mlartifacts").rglob("data/model.pth"))[:1]
    plant(pickled, marker)
    served = pickled.relative_to(store / "mlartifacts")
    assert call("GET", f"/api/2.0/mlflow-artifacts/artifacts/{served}")[0] == 200
    assert not marker.exists()
    status, again = call("POST", "/api/2.0/mlflow/runs/search", json.dumps({"experiment_ids": ["1"]}).encode())
    assert [r["info"] for r in json.loads(again)["runs"]] == [r["info"] for r in runs]
    assert "k" not in {t["key"] for r in json.loads(again)["runs"] for t in r["data"].get("tags", [])}


def test_the_sweep_report_opens_with_its_pictures_from_the_file_and_the_artifacts_tab(page, store, shots, request):
    """MLflow's UI shows at most 10 runs' images and no sweep-wide page: the report shows all."""
    from mlflow import MlflowClient

    report = next(store.glob("multirun/*/*/sweep_report.html"))
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    [parent] = client.search_runs(["1"], "tags.sweep = 'parent'")
    loaded = "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
    tab = page.context.new_page()
    tab.goto(report.as_uri())
    pictures = tab.evaluate(loaded)
    assert len(pictures) >= 2 * 3 + 1 and all(pictures), pictures  # 2 jobs x 3 pictures (+ 1 manifold), curves
    keep(tab, shots, "sweep_report", readme=True)
    tab.close()
    page.goto(page.url.split("#")[0] + f"#/experiments/1/runs/{parent.info.run_id}/artifacts")
    page.get_by_text("sweep_report.html").first.click()
    frame = page.frame_locator("iframe").first
    frame.locator("h1").first.wait_for()
    shown = frame.locator("img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert len(shown) == len(pictures) and all(shown), shown
    keep(page, shots, "sweep_report_artifacts_tab")
    passed(request)


def test_a_fresh_browser_opens_in_model_training_mode_with_the_pictures_showing(browser, ui, store, shots, request):
    """A fresh profile opened MLflow's GenAI mode (Traces, Judges, "Agent versions", runs under
    "Evaluations"), and a run's Model metrics tab showed image cards at step 0 with "No image
    logged" until settings were changed. No click on any setting here."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    [single] = client.search_runs(["1"], "attributes.run_name = 'mlp-h256-z2-b1.0'")
    context = browser.new_context(viewport={"width": 1800, "height": 1250})  # a fresh profile
    tab = context.new_page()
    tab.set_default_timeout(90_000)
    try:
        tab.goto(f"{ui}/#/experiments/1/runs/{single.info.run_id}/model-metrics")
        with contextlib.suppress(sync_api.Error):
            tab.get_by_role("button", name="Close").click(timeout=5000)  # MLflow Assistant, if shown
        sync_api.expect(tab.get_by_text("Model metrics").first).to_be_visible()
        tab.mouse.move(900, 700)
        pictures = "() => Array.from(document.images).filter(i => i.src.includes('get-artifact') && i.naturalWidth > 0)"
        for _ in range(40):  # the cards load as they are scrolled to
            if tab.evaluate(f"({pictures})().length") >= 4:
                break
            tab.mouse.wheel(0, 900)
            tab.wait_for_timeout(500)
        shown = tab.evaluate(f"({pictures})().map(i => decodeURIComponent(i.src).split('images/')[1].split('+')[0])")
        assert sorted(shown) == ["latent_space", "manifold", "reconstructions", "samples"], shown
        tab.get_by_text("reconstructions", exact=True).first.scroll_into_view_if_needed()
        tab.mouse.wheel(0, 250)  # the four picture cards in view
        tab.wait_for_timeout(1000)
        body = tab.locator("body").inner_text()
        for genai in ("Judges", "Agent versions", "Evaluation runs", "Prompts"):
            assert genai not in body, f"GenAI chrome on the first look: {genai!r}"
        assert "No image logged" not in body
        keep(tab, shots, "ui_model_metrics_first_look", readme=True)
        tab.goto(f"{ui}/#/experiments/1/runs")
        sync_api.expect(tab.get_by_text("Training runs").first).to_be_hidden()  # GenAI's name for the runs list
        keep(tab, shots, "ui_runs_first_look", readme=True)
    except Exception:
        tab.screenshot(path=str(shots / "first_look-failure.png"), full_page=True)
        print(f"UI screenshot at failure: {shots / 'first_look-failure.png'}")
        raise
    finally:
        context.close()
    passed(request)
