"""The Dagster UI in a real browser: headless Chromium (Debian's package) driven by Playwright.

``mlplatform ui`` (``dagster dev``: webserver and daemon) is started on loopback on a
fresh state folder with ingested sample data. The test then, as a person would:

1. opens the global asset lineage, expands every group and finds every asset of the
   definitions in the graph;
2. opens the ``train_and_score`` job and clicks **Materialize all**; the run (queued,
   launched by the daemon) must succeed;
3. opens the ``model_evaluation`` asset and reads its metrics off the page and opens
   its confusion-matrix image.

Screenshots of each step go to ``test-artifacts/ui/`` (git-ignored). Needs Chromium at
``/usr/bin/chromium`` (``.ci/run`` installs it); skips without it, except in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
RUN_TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPLATFORM_", "MLFLOW_"))}
    env.pop("DAGSTER_HOME", None)  # the command points Dagster at the state itself
    env.update(
        {
            "MLPLATFORM_HOME": str(state),
            "MLPLATFORM_AUTOMATION": "off",  # sensors and schedules stay stopped
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def _mlplatform(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "mlplatform"), *args],
        cwd=REPO,
        env=_env(state),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload: dict[str, Any] = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]  # type: ignore[no-any-return]


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder with 10,000 generated rows ingested (a file batch and a SQL batch)."""
    root = tmp_path_factory.mktemp("ui") / "state"
    _mlplatform(root, "generate", "--rows", "10000")
    ingested = _mlplatform(root, "ingest")
    assert ingested.stdout.count("ingested ") == 2, ingested.stdout
    return root


@pytest.fixture(scope="module")
def dagster_ui(state: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlplatform ui`` on loopback on ``state``; yields its base URL once the code loaded."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("ui-log") / "dagster-dev.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "mlplatform"), "ui", "--port", str(port)],
        cwd=REPO,
        env=_env(state),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # dagster dev starts a webserver, a daemon, code servers
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if _graphql(base, "{ assetNodes { id } }")["assetNodes"]:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("dagster dev did not come up:\n" + log_path.read_text()[-4000:])
            time.sleep(1)
        yield base
    finally:
        _stop_group(proc)
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, ARTIFACTS / "dagster-dev.log")


def _expected_assets(state: Path) -> set[str]:
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths

    graph = build_definitions(StatePaths(state)).resolve_asset_graph()
    return {key.to_user_string() for key in graph.get_all_asset_keys()}


def _dismiss_welcome(page: Any) -> None:
    """The first visit may show a newsletter dialog; skip it when it is there."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=3_000)
    except Exception:  # playwright's TimeoutError: no dialog this time
        return
    skip.click()


def _shot(page: Any, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def _latest_run(base: str) -> dict[str, Any] | None:
    data = _graphql(
        base,
        """{ runsOrError(filter: {pipelineName: "train_and_score"}, limit: 1) {
               ... on Runs { results { runId status } } } }""",
    )
    results = data["runsOrError"]["results"]
    return results[0] if results else None


def _metadata_value(page: Any, label: str) -> float:
    """The value the asset page's metadata table shows for ``label`` (its last cell)."""
    for row in page.locator("tr").filter(has_text=label).all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        if cells and cells[0] == label:
            return float(cells[-1])
    raise AssertionError(f"no metadata row {label!r} on the page")


def test_the_dagster_ui_shows_the_graph_materializes_and_shows_the_evaluation(
    dagster_ui: str, state: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    expected = _expected_assets(state)
    assert {"raw_observations", "model_evaluation", "champion_model"} <= expected
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1000})
            page.set_default_timeout(60_000)

            # 1. the global asset graph, every group expanded (Alt+E), lists every asset
            page.goto(f"{dagster_ui}/asset-groups", wait_until="networkidle")
            _dismiss_welcome(page)
            page.get_by_text("Global asset lineage").click()
            page.keyboard.press("Alt+KeyE")
            for key in sorted(expected):
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            _shot(page, "01-asset-graph.png")

            # 2. "Materialize all" of the training job, from its page
            assert _latest_run(dagster_ui) is None
            page.goto(
                f"{dagster_ui}/locations/mlplatform/jobs/train_and_score", wait_until="networkidle"
            )
            _dismiss_welcome(page)
            page.get_by_role("button", name="Materialize all").click()
            deadline = time.monotonic() + RUN_TIMEOUT_S
            run = _latest_run(dagster_ui)
            while run is None or run["status"] not in {"SUCCESS", "FAILURE", "CANCELED"}:
                assert time.monotonic() < deadline, f"run not finished in time: {run}"
                time.sleep(3)
                run = _latest_run(dagster_ui)
            _shot(page, "02-materialize-all-launched.png")
            page.goto(f"{dagster_ui}/runs/{run['runId']}", wait_until="networkidle")
            _shot(page, "03-run.png")
            assert run["status"] == "SUCCESS", f"run {run['runId']}: {run['status']}"

            # 3. the evaluation asset's page shows the metrics and an image
            data = _graphql(
                dagster_ui,
                """{ assetOrError(assetKey: {path: ["model_evaluation"]}) { ... on Asset {
                     assetMaterializations(limit: 1) { runId metadataEntries {
                       label ... on FloatMetadataEntry { floatValue } } } } } }""",
            )
            [latest] = data["assetOrError"]["assetMaterializations"]
            assert latest["runId"] == run["runId"]
            recorded = {
                e["label"]: e["floatValue"] for e in latest["metadataEntries"] if "floatValue" in e
            }
            page.goto(f"{dagster_ui}/assets/model_evaluation", wait_until="networkidle")
            _dismiss_welcome(page)
            expect(page.get_by_text("confusion_matrix_plot", exact=True)).to_be_visible()
            for metric in ("recall", "precision", "f1", "roc_auc", "pr_auc"):
                shown = _metadata_value(page, metric)
                assert shown == pytest.approx(recorded[metric], abs=1e-9), metric
            _shot(page, "04-model-evaluation.png", full_page=True)
            plot_row = page.locator("tr").filter(has_text="confusion_matrix_plot")
            plot_row.get_by_text("Show Markdown").click()
            image = page.get_by_role("img", name="confusion matrix")
            expect(image).to_be_visible()
            assert image.evaluate("img => img.complete && img.naturalWidth") > 100
            _shot(page, "05-confusion-matrix.png")
        finally:
            browser.close()
