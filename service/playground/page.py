"""The playground page as a browser sees it: open it, fill fields, press buttons, wait for
what appears. Used by the browser tests and the screenshot command alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class PlaygroundPage:
    """`driver`: a Selenium WebDriver (`service.playground.browser.chromium`); `base_url`: the
    service, e.g. http://127.0.0.1:8000."""

    def __init__(self, driver: Any, base_url: str, timeout_s: float = 120):
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def wait(self, condition: Callable[[], T], what: str, timeout_s: float | None = None) -> T:
        """Poll `condition` until it returns something truthy; TimeoutError naming `what`."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the playground did not show {what}")
            time.sleep(0.05)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def open(self, key: str | None = None) -> None:
        """Load the page and wait until it has asked the service what is served; with `key`,
        enter it in the key field (shown when keys are required) and wait for the models."""
        self.driver.get(self.base_url + "/")
        self.wait(lambda: self.js("return document.body.dataset.ready === 'true'"), "its start")
        if key is not None and self.element("api-key").get_attribute("value") != key:
            self.set_key(key)

    def set_key(self, key: str) -> None:
        """Type the key and wait until the page has listed the models with it."""
        self.fill("api-key", key)
        self.js("document.getElementById('api-key').dispatchEvent(new Event('change'))")
        self.wait(lambda: self.js("return document.body.dataset.served === 'loaded'"), "models")

    def show(self, view: str) -> None:
        self.js("location.hash = arguments[0]", view)
        self.wait(lambda: self.visible(f"view-{view}"), f"the {view} view")

    def element(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def visible(self, element_id: str) -> bool:
        """Rendered, as the browser sees it (not merely lacking the `hidden` attribute)."""
        return self.element(element_id).is_displayed()

    def text(self, element_id: str) -> str:
        return self.js("return document.getElementById(arguments[0]).textContent", element_id)

    def options(self, select_id: str) -> list[str]:
        return self.js(
            "return [...document.getElementById(arguments[0]).options].map(o => o.value)",
            select_id,
        )

    def fill(self, element_id: str, value: str | int | float) -> None:
        """Type into an input or textarea (replacing what it held), or choose a select's option
        by value."""
        from selenium.webdriver.support.ui import Select

        element = self.element(element_id)
        if element.tag_name == "select":
            Select(element).select_by_value(str(value))
            return
        element.clear()
        element.send_keys(str(value))

    def press(self, button_id: str) -> None:
        self.element(button_id).click()

    def busy(self, button_id: str) -> bool:
        return bool(self.js("return document.getElementById(arguments[0]).disabled", button_id))

    def press_and_wait(self, button_id: str, what: str) -> None:
        """Press a button and wait until its work is done (the page disables it meanwhile)."""
        self.press(button_id)
        self.wait(lambda: not self.busy(button_id), what)

    def screenshot(self, path: Path, width: int = 1280) -> Path:
        """The whole page (the window grows to its height), as a PNG."""
        metrics = {"width": width, "deviceScaleFactor": 1, "mobile": False}
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {**metrics, "height": 600}
        )
        height = self.js("return Math.ceil(document.documentElement.scrollHeight)")
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {**metrics, "height": max(600, height)}
        )
        time.sleep(0.2)  # a relayout after the resize
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not self.driver.save_screenshot(str(path)):
                raise RuntimeError(f"cannot write {path}")
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return path
