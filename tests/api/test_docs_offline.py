"""``/docs`` renders in Chromium on a machine without internet: Swagger UI's files come from the package.

The browser's network is cut off (every request that is not to the service is aborted, and host names
do not resolve); the page must still show the API's operations, and must not even try another host
(FastAPI's default page loads Swagger UI from a public CDN and stays blank here).
"""

from __future__ import annotations

import sys

import httpx
import pytest

from tests.processes import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Process,
    base_env,
    free_port,
    require_chromium,
    wait_until_up,
)

OFFLINE_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def service(make_database, tmp_path_factory):
    home = tmp_path_factory.mktemp("docs-offline")
    url = make_database()
    env = {"LEDGER_DATABASE_URL": url, "SNAPSHOT_DATABASE_URL": url, "SNAPSHOT_STORAGE_URI": str(home / "store"),
           "SNAPSHOT_START_DATE": "2026-10-01", "SNAPSHOT_HOME": str(home),
           "DAGSTER_WEBSERVER_URL": "http://127.0.0.1:1"}
    port = free_port()
    process = Process([sys.executable, "-m", "snapshot_pipeline.cli", "serve", "--port", str(port), "--workers", "1",
                       "--log-level", "warning"], base_env(env), home / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, "/openapi.json", process.proc, home / "serve.log", seconds=90)
        yield base
    finally:
        process.stop()


def test_docs_pages_load_only_from_the_service(service):
    for page in ("/docs", "/redoc"):
        html = httpx.get(service + page, timeout=30).text
        assert "cdn." not in html and "https://" not in html.split("<body", 1)[0], html[:2000]
    script = httpx.get(service + "/docs-assets/swagger-ui-bundle.js", timeout=30)
    assert script.status_code == 200 and len(script.content) > 500_000


def test_docs_render_offline_in_chromium(service, tmp_path):
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    outside: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(service):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=OFFLINE_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_the_service)
            page = context.new_page()
            page.goto(service + "/docs", wait_until="domcontentloaded")
            # visible operations, not a blank page
            expect(page.get_by_text("/balances/{balance_id}/at").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("/balances-snapshots").first).to_be_visible()
            expect(page.get_by_text("/metrics").first).to_be_visible()
            page.get_by_text("/balances/{balance_id}/at").first.click()  # expand it: its parameters render
            expect(page.get_by_text("from_source").first).to_be_visible(timeout=10_000)
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
        finally:
            browser.close()
    assert outside == [], outside
    assert (tmp_path / "docs.png").stat().st_size > 10_000
