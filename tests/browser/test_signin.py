"""Signing in where there is no dev token box: a pasted token, checked by the server."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.conftest import own_cluster
from tests.harness import token


async def test_a_production_node_takes_a_pasted_token_and_refuses_a_bad_one(
    tmp_path: Path, open_page: OpenPage
) -> None:
    async with own_cluster("embedded", tmp_path) as cluster:
        node = cluster.nodes[0]
        await cluster.api("alice").create_room("team", ["carol"])
        carol = await open_page(node, "carol")
        page = carol.page
        await expect(page.locator("#token-login")).to_be_visible()
        await expect(page.locator("#dev-login")).to_be_hidden()
        await expect(page.locator("#token-title")).to_have_text("Sign in with a token")

        await carol.sign_in_token("not a token")
        await expect(page.locator("#signin-error")).to_contain_text("not a JWT")

        # Signed with another key: the handshake is refused, and the page says so.
        forged = token("carol", secret="another-secret-that-this-server-does-not-know")
        await carol.sign_in_token(forged)
        await expect(page.locator("#signin-error")).to_contain_text("refused the token")
        await expect(page.locator("#signin")).to_be_visible()
        await expect(carol.conn).to_have_attribute("data-state", "closed")

        await carol.sign_in_token(token("carol"))
        await carol.expect_connected()
        await carol.open_room("team")
        await carol.send("signed in with a pasted token")
        await expect(carol.bodies).to_have_text(["signed in with a pasted token"])
        carol.assert_clean()
