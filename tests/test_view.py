"""The browser view: the Mesa model behind it, its page parts, the command, and a real browser.

The browser test starts ``engraft view`` on loopback and loads the page in
headless Chromium through chromedriver (Debian: ``chromium`` and
``chromium-driver``); it is skipped, with the reason, where those or the
``viz`` extra are not installed.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from engraft.cli import main
from engraft.lattice import EMPTY, GRAFT
from tests.conftest import CONFIGS, ROOT

TINY = str(CONFIGS / "tiny.yaml")
view = pytest.importorskip("engraft.plots.view", reason="needs mesa")


@pytest.mark.parametrize("engine", ["kernel", "mesa"])
def test_marrow_view_steps_days_with_conditioning_and_infusion(engine):
    if engine == "mesa":
        pytest.importorskip("engraft.reference", reason="the Mesa reference model is not in this tree")
    model = view.MarrowView(TINY, engine=engine, days_per_step=10)
    assert model.day == 0 and len(model.records) == 1
    state = model.lattice_state()
    assert not ((state["flags"] & GRAFT) != 0).any()  # graft cells are in the blood at day 0
    for _ in range(3):
        model.step()
    assert model.day == 30 and len(model.records) == 4
    assert [r["day"] for r in model.records] == [0.0, 10.0, 20.0, 30.0]
    frame = model.datacollector.get_model_vars_dataframe()
    assert list(frame["day"]) == [0.0, 10.0, 20.0, 30.0]
    np.testing.assert_allclose(frame["factor_iu_dl"], [r["factor_iu_dl"] for r in model.records])
    state = model.lattice_state()
    graft = (state["ctype"] != EMPTY) & ((state["flags"] & GRAFT) != 0)
    assert graft.any()  # infused cells have lodged
    assert state["niche"].shape == state["ctype"].shape


def test_marrow_view_stops_at_the_end_of_the_experiment():
    model = view.MarrowView(TINY, engine="kernel", days_per_step=50)
    while model.running:
        model.step()
    assert model.day == 120 and model.records[-1]["day"] == 120


def test_sliders_change_the_experiment():
    model = view.MarrowView(TINY, engine="kernel", dose=4.0, dose_unit=1e8, conditioning=0.5,
                            transduction=0.0)
    exp = model.exp
    assert exp.infusions[0].dose_per_kg == pytest.approx(4e8)
    assert exp.infusions[0].transduction == 0.0
    assert set(exp.conditioning.myeloablation.values()) == {0.5}
    model.step()
    model.step()
    assert all(r["hsc_transduced_fraction"] in (0.0,) or np.isnan(r["hsc_transduced_fraction"])
               for r in model.records)


def test_model_parameters_fit_the_model_and_start_at_the_config():
    params = view.model_parameters(TINY, "kernel")
    accepted = inspect.signature(view.MarrowView.__init__).parameters
    assert set(params) <= set(accepted)  # SolaraViz passes every parameter to the model
    sliders = {k: v for k, v in params.items() if isinstance(v, dict) and "type" in v}
    assert set(sliders) == {"dose", "transduction", "conditioning", "days_per_step"}
    assert sliders["dose"]["value"] * params["dose_unit"] == pytest.approx(2e8)
    assert "cells/kg" in sliders["dose"]["label"]
    assert sliders["transduction"]["value"] == 0.5
    assert sliders["conditioning"]["value"] == 0.9
    for s in sliders.values():
        assert s["min"] <= s["value"] <= s["max"]


def test_page_figures_have_units_and_the_scheme():
    from engraft.plots.style import HSC_COLOUR

    model = view.MarrowView(TINY, engine="kernel")
    model.step()
    for by in ("type", "origin", "clone"):
        fig = view.lattice_figure(model, by)
        (ax,) = fig.axes
        assert ax.get_xlabel() == "x (lattice sites)" and len(ax.images) == 1
        assert f"by {by}, day 7" in ax.get_title()
    ax = view.factor_figure(model).axes[0]
    assert "IU/dL" in ax.get_ylabel() and "days" in ax.get_xlabel()
    assert len(ax.patches) == 4 and ax.get_xlim() == (0, 120)
    ax = view.chimerism_figure(model).axes[0]
    assert "fraction" in ax.get_ylabel()
    assert ax.get_lines()[0].get_color() == HSC_COLOUR
    assert len(ax.get_lines()) == 1 + len(model.lineage_names)


def test_auto_engine_prefers_the_mesa_reference_on_small_lattices():
    pytest.importorskip("engraft.reference", reason="the Mesa reference model is not in this tree")
    from engraft import load_config

    assert view.choose_engine(load_config(TINY), "auto") == "mesa"
    big = load_config(CONFIGS / "hemophilia_a_lentiviral.yaml")
    assert view.choose_engine(big, "auto") == "kernel"
    assert view.choose_engine(big, "kernel") == "kernel"


def test_view_command_errors_exit_2(tmp_path, monkeypatch, capsys):
    assert main(["view", str(tmp_path / "missing.yaml")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    if importlib.util.find_spec("engraft.reference") is not None:
        assert main(["view", str(CONFIGS / "hemophilia_a_lentiviral.yaml"), "--engine", "mesa"]) == 2
        assert "Mesa engine" in capsys.readouterr().err
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "solara" else real_find_spec(name, *a))
    assert main(["view", TINY]) == 2
    assert "engraft[viz]" in capsys.readouterr().err


def test_solara_command_serves_the_app_on_the_given_address():
    command = view.solara_command("127.0.0.1", 8123)
    assert command[1:4] == ["-m", "solara", "run"]
    assert view.APP_MODULE in command
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "8123"
    assert importlib.util.find_spec(view.APP_MODULE) is not None


# ----------------------------------------------------------------------------------
# a real browser
# ----------------------------------------------------------------------------------
def _browser_or_skip() -> tuple[str, str]:
    for module in ("solara", "selenium"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'engraft[viz,test]')")
    try:
        view.check_viz_installed()
    except view.ViewUnavailableError as err:
        pytest.skip(str(err))
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    if driver is None:
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_http(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"engraft view exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s:g} s")


def _wait(condition, timeout_s: float, what: str):
    """Poll ``condition`` until it returns something true. The page re-renders while
    it is read: an element found a moment ago may be gone (stale); that try counts
    as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.mark.browser
@pytest.mark.slow
def test_view_in_headless_chromium(tmp_path):
    browser, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    port = _free_port()
    log = open(tmp_path / "view.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen([sys.executable, "-m", "engraft", "view", TINY, "--port", str(port)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    chrome = None
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_http(url, server, timeout_s=90)
        chrome = webdriver.Chrome(service=Service(driver_path), options=options)
        chrome.get(url)

        def body() -> str:
            return chrome.find_element(By.TAG_NAME, "body").text

        def loaded_sources() -> list[str]:
            # one script, so no element can go stale between finding and reading it
            return chrome.execute_script(
                "return Array.from(document.images).filter(im => im.naturalWidth > 100).map(im => im.src)")

        def click_step() -> bool:
            step = next(b for b in chrome.find_elements(By.TAG_NAME, "button") if b.text.strip() == "STEP")
            step.click()
            return True

        _wait(lambda: "day 0 of 120" in body(), 60, "the read-outs")
        text = body()
        for label in ("CD34+ dose", "transduction", "conditioning", "ORIGIN", "CLONE"):
            assert label in text, f"{label!r} not on the page"
        assert "mesa engine" in text
        before = set(_wait(lambda: (lambda s: s if len(s) >= 3 else None)(loaded_sources()), 30,
                           "the lattice and two plots"))
        _wait(click_step, 30, "the STEP button")
        _wait(lambda: "day 7 of 120" in body(), 60, "a step of 7 days")
        after = _wait(lambda: (lambda d: d if len(d) >= 3 else None)(set(loaded_sources()) - before), 30,
                      "redrawn figures")
        assert len(after) >= 3  # lattice, factor level and chimerism all redrawn
        shot = tmp_path / "view.png"
        chrome.save_screenshot(str(shot))
        pixels = mpimg.imread(shot)[..., :3]
        assert pixels.std() > 0.05 and np.mean(pixels.min(axis=-1) < 0.9) > 0.05
    finally:
        if chrome is not None:
            chrome.quit()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the view and the solara server it started
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()
    assert Path(tmp_path / "view.png").stat().st_size > 10_000
