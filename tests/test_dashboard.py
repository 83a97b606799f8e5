"""The live dashboard end to end: two `crdtmem serve` processes (b peers to a) and a headless Chromium
showing a's /dashboard. Changes made elsewhere must reach the page through the event feed, without a
reload; conflicts are resolved by clicking in the page and the resolution replicates.

Needs /usr/bin/chromium (`apt-get install -y chromium`) and the playwright package; their absence is
a failure with that message, not a skip.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page

from crdtmem import Replica
from tests.support.browser import Chromium, chromium, expect
from tests.support.processes import ServerProcess
from tests.support.rest import Api, eventually

U1 = "user:u1:memories"
WAIT_MS = 15_000
SCREENSHOT = Path("/tmp/dashboard.png")


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    async with chromium() as browser:
        yield browser
        assert not browser.js_errors(), f"JavaScript errors in the dashboard: {browser.js_errors()}"


def start_pair(
    procs: list[ServerProcess], tmp_path: Path, *b_extra: str
) -> tuple[ServerProcess, ServerProcess]:
    a = ServerProcess(tmp_path, "a", channels=[U1]).start()
    procs.append(a)
    b = ServerProcess(tmp_path, "b", channels=[U1], peers=[a.url], extra=list(b_extra)).start()
    procs.append(b)
    return a, b


async def open_dashboard(browser: Chromium, url: str, token: str | None = None) -> Page:
    page = (await browser.open(f"{url}/dashboard" + (f"?token={token}" if token else ""))).page
    await expect(page.locator("#feed-state")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return page


def memory_row(page: Page, memory_id: str) -> Locator:
    return page.locator(f'#memories li.memory[data-id="{memory_id}"]')


async def test_a_write_on_the_other_replica_appears_without_reload(procs, session, tmp_path, browser):
    a, b = start_pair(procs, tmp_path)
    page = await open_dashboard(browser, a.url)
    await page.evaluate("window.notReloaded = true")

    written = await Api(session, b.url).add(
        "prefers dark mode", user_id="u1", tenant_id="acme", tags=["ui", "theme"]
    )
    row = memory_row(page, written["id"])
    await expect(row).to_contain_text("prefers dark mode", timeout=WAIT_MS)
    await expect(row.locator(".badge.kind")).to_have_text("fact")
    await expect(row.locator(".tag")).to_have_text(["#ui", "#theme"])
    await expect(row.locator(".scope")).to_have_text("user u1 · tenant acme")

    await Api(session, b.url).patch(written["id"], content="prefers light mode")
    await expect(row).to_contain_text("prefers light mode", timeout=WAIT_MS)
    await expect(page.locator("#memories li.memory").first).to_have_attribute("data-id", written["id"])
    assert await page.evaluate("window.notReloaded") is True, "the page reloaded instead of updating"


async def test_a_memory_forgotten_on_the_other_replica_leaves_the_page(procs, session, tmp_path, browser):
    a, b = start_pair(procs, tmp_path)
    api_b = Api(session, b.url)
    kept = await api_b.add("kept", user_id="u1")
    gone = await api_b.add("to be forgotten", user_id="u1")
    page = await open_dashboard(browser, a.url)
    await expect(memory_row(page, gone["id"])).to_contain_text("to be forgotten", timeout=WAIT_MS)
    await expect(memory_row(page, kept["id"])).to_contain_text("kept", timeout=WAIT_MS)
    await page.evaluate("window.notReloaded = true")

    await api_b.call("DELETE", f"/v1/memories/{gone['id']}?purge=true")
    await expect(memory_row(page, gone["id"])).to_have_count(0, timeout=WAIT_MS)
    await expect(memory_row(page, kept["id"])).to_contain_text("kept")
    await expect(page.locator("#memory-count")).to_have_text("1")
    assert await page.evaluate("window.notReloaded") is True, "the page reloaded instead of updating"


async def test_a_conflict_is_resolved_by_a_click_on_both_replicas(procs, session, tmp_path, browser):
    a, b = start_pair(procs, tmp_path)
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    memory = await api_a.add("tea", user_id="u1")
    await eventually(lambda: _has(api_b, memory["id"]), what="b receives the memory")
    page = await open_dashboard(browser, a.url)

    b.stop()
    await api_a.patch(memory["id"], content="coffee")
    async with Replica(b.db, replica_id=b.replica_id) as offline:
        await offline.update(memory["id"], content="cocoa")
    b.start()

    async def both_conflicted() -> bool:
        return len(await api_a.conflicts()) == 1 and len(await api_b.conflicts()) == 1

    await eventually(both_conflicted, what="both replicas list the conflict")
    conflict = page.locator(f'#conflicts li.conflict[data-memory-id="{memory["id"]}"]')
    values = conflict.locator(".candidate .value")
    await expect(values).to_have_count(2, timeout=WAIT_MS)
    assert sorted(await values.all_inner_texts()) == ["cocoa", "coffee"]
    row = memory_row(page, memory["id"])
    await expect(row.locator(".badge.conflicted")).to_be_visible()
    await expect(row).not_to_have_class(re.compile(r"\bchanged\b"))  # highlight over: a calm screenshot
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Keep the value reads do NOT return now, so the outcome shows the click sent the right value.
    read_now = (await api_a.get(memory["id"]))["content"]
    keep = "coffee" if read_now == "cocoa" else "cocoa"
    await conflict.locator(".candidate", has_text=keep).get_by_role("button", name="Keep this").click()

    await expect(conflict).to_have_count(0, timeout=WAIT_MS)
    await expect(page.locator("#conflicts-empty")).to_be_visible()
    await expect(row.locator(".text")).to_have_text(keep, timeout=WAIT_MS)
    await expect(row.locator(".badge.conflicted")).to_have_count(0)

    async def both_resolved() -> bool:
        return not await api_a.conflicts() and not await api_b.conflicts()

    await eventually(both_resolved, what="GET /v1/conflicts empty on both replicas")
    for api in (api_a, api_b):
        assert (await api.get(memory["id"]))["content"] == keep


async def test_the_status_panel_shows_peer_and_link_with_their_mode(procs, session, tmp_path, browser):
    a, b = start_pair(procs, tmp_path, "--mode", "lazy", "--interval", "0.2")
    page_a = await open_dashboard(browser, a.url)
    page_b = await open_dashboard(browser, b.url)

    await expect(page_a.locator("#replica")).to_have_text("a")
    inbound = page_a.locator('#peers tr[data-direction="inbound"][data-peer="b"]')
    await expect(inbound.locator(".badge.mode")).to_have_text("lazy", timeout=WAIT_MS)
    await expect(inbound).to_contain_text("connected")

    outbound = page_b.locator('#peers tr[data-direction="outbound"][data-peer="a"]')
    await expect(outbound.locator(".badge.mode")).to_have_text("lazy", timeout=WAIT_MS)
    await expect(outbound).to_contain_text("connected")
    peer = (await Api(session, b.url).status())["peers"][0]
    assert (peer["peer_id"], peer["mode"], peer["connected"]) == ("a", "lazy", True)

    # Version vectors follow writes on either side.
    await Api(session, b.url).add("x", user_id="u1")
    await expect(page_a.locator("#vectors .vector", has_text=U1)).to_contain_text("b: 1", timeout=WAIT_MS)


async def test_tokens_no_index_and_static_files(procs, session, tmp_path, browser):
    secret = "dashboard-token-0123456789abcdef"
    tokens = tmp_path / "tokens.json"
    admin = {"token": secret, "principal": "user:admin", "read": ["*"], "write": ["*"]}
    blind = {"token": "blind-token-0123456789abcdef", "principal": "user:blind", "read": [], "write": []}
    tokens.write_text(json.dumps({"tokens": [admin, blind]}))
    node = ServerProcess(tmp_path, "t", tokens=tokens, extra=["--no-index"]).start()
    procs.append(node)

    refused = (await browser.open(f"{node.url}/dashboard")).page
    await expect(refused.locator("#banner")).to_contain_text("401 Unauthorized", timeout=WAIT_MS)
    await expect(refused.locator("#banner")).to_contain_text("/dashboard?token=")

    wrong = (await browser.open(f"{node.url}/dashboard?token=not-the-right-token")).page
    await expect(wrong.locator("#banner")).to_contain_text("did not accept the token", timeout=WAIT_MS)

    forbidden = (await browser.open(f"{node.url}/dashboard?token={blind['token']}")).page
    await expect(forbidden.locator("#banner")).to_contain_text(
        "Event feed: 403 Forbidden: user:blind may not read any channel", timeout=WAIT_MS
    )

    page = await open_dashboard(browser, node.url, token=secret)
    await expect(page.locator("#banner")).to_be_hidden()
    written = await Api(session, node.url, secret).add("seen with a token")
    await expect(memory_row(page, written["id"])).to_be_visible(timeout=WAIT_MS)
    await page.fill("#search-query", "token")
    await page.click("#search button[type=submit]")
    await expect(page.locator("#search-message")).to_have_text(
        "Search is not available: this replica has no search index."
    )

    async with session.get(f"{node.url}/dashboard") as response:
        html = await response.text()
        assert response.status == 200 and response.content_type == "text/html"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        etag = response.headers["ETag"]
    async with session.get(f"{node.url}/dashboard", headers={"If-None-Match": etag}) as response:
        assert response.status == 304
    script = html.split('<script src="', 1)[1].split('"', 1)[0]
    async with session.get(f"{node.url}/{script}") as response:
        assert response.content_type == "text/javascript"
        assert "immutable" in response.headers["Cache-Control"]
    async with session.get(f"{node.url}/dashboard/", allow_redirects=False) as response:
        assert response.status == 308 and response.headers["Location"] == "../dashboard"
    # the query is kept as it was sent, percent-encoded: a %0A cannot break the Location header
    async with session.get(
        f"{node.url}/dashboard/?token=%0Ax%0D&n=%C3%A9", allow_redirects=False
    ) as response:
        assert response.status == 308
        assert response.headers["Location"] == "../dashboard?token=%0Ax%0D&n=%C3%A9"


async def _has(api: Api, memory_id: str) -> bool:
    return await api.get(memory_id) is not None
