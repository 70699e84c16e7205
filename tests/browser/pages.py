"""The web page as a test sees it: one signed-in user in one browser context.

Tests talk to the page only through what a person sees and does (forms,
buttons, the message list, badges), plus the `data-*` attributes the page
sets on those elements (a message's seq, a room's id, the connection state).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Locator,
    Page,
    ViewportSize,
    expect,
)
from playwright.async_api import Error as PlaywrightError

from tests.harness import ServerProcess

MESSAGES = "#message-list li.msg:not(.local)"


@dataclass
class ChatPage:
    """One user's tab, with everything the page did that it should not have."""

    user: str
    node: ServerProcess
    context: BrowserContext
    page: Page
    shots: Path
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        browser: Browser,
        node: ServerProcess,
        user: str,
        shots: Path,
        height: int = 720,
    ) -> ChatPage:
        context = await browser.new_context(
            viewport=ViewportSize(width=1100, height=height),
            locale="en-GB",
            timezone_id="UTC",
        )
        page = await context.new_page()
        chat = cls(user, node, context, page, shots)
        page.on("dialog", chat._on_dialog)
        page.on("pageerror", lambda exc: chat.errors.append(str(exc)))
        await page.goto(node.url + "/")
        return chat

    async def _on_dialog(self, dialog: Dialog) -> None:
        # alert() from a message body would land here: record it, never block on it.
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    # Signing in ---------------------------------------------------------------------

    async def sign_in_dev(self) -> None:
        await expect(self.page.locator("#dev-login")).to_be_visible()
        await self.page.locator("#dev-user").fill(self.user)
        await self.page.locator("#dev-form button").click()
        await self.expect_connected()

    async def sign_in_token(self, token: str) -> None:
        await self.page.locator("#token").fill(token)
        await self.page.locator("#token-form button").click()

    async def expect_connected(self, timeout: float = 30_000) -> None:
        await expect(self.conn).to_have_attribute("data-state", "open", timeout=timeout)
        await expect(self.page.locator("#me-name")).to_have_text(self.user)

    @property
    def conn(self) -> Locator:
        return self.page.locator("#conn")

    # Rooms --------------------------------------------------------------------------

    def room_item(self, room: str) -> Locator:
        return self.page.locator(f'li.room[data-room="{room}"]')

    def unread(self, room: str) -> Locator:
        return self.room_item(room).locator(".unread")

    async def open_room(self, room: str, timeout: float = 20_000) -> None:
        await self.room_item(room).locator("button").click(timeout=timeout)
        await expect(self.room_item(room)).to_have_attribute("aria-current", "true")
        await expect(self.page.locator("#room-view")).to_be_visible()

    async def create_room(self, room: str, members: list[str], name: str = "") -> None:
        await self.page.locator("#new-room summary").click()
        await self.page.locator("#room-id").fill(room)
        await self.page.locator("#room-name").fill(name)
        await self.page.locator("#room-members").fill(", ".join(members))
        await self.page.locator("#room-form button").click()
        await expect(self.room_item(room)).to_have_attribute("aria-current", "true")

    async def open_dm(self, peer: str) -> None:
        await self.page.locator("#dm-user").fill(peer)
        await self.page.locator("#dm-form button").click()
        await expect(self.page.locator("#room-title")).to_have_text(f"@{peer}")

    async def add_member(self, user: str) -> None:
        await self.page.locator("#member-user").fill(user)
        await self.page.locator("#member-form button").click()
        await expect(self.page.locator(f'#members li[data-user="{user}"]')).to_be_visible()

    # The conversation ------------------------------------------------------------------

    @property
    def messages(self) -> Locator:
        return self.page.locator(MESSAGES)

    @property
    def bodies(self) -> Locator:
        return self.page.locator(MESSAGES + " .body")

    @property
    def local(self) -> Locator:
        """My messages the page shows as not yet sent."""
        return self.page.locator("#message-list li.msg.local")

    async def send(self, text: str) -> None:
        await self.page.locator("#text").fill(text)
        await self.page.locator("#text").press("Enter")

    async def type_slowly(self, text: str, delay_ms: float = 40) -> None:
        await self.page.locator("#text").press_sequentially(text, delay=delay_ms)

    async def seqs(self) -> list[int]:
        values: list[str] = await self.messages.evaluate_all(
            "items => items.map(li => li.dataset.seq)"
        )
        return [int(v) for v in values]

    async def ids(self) -> list[str]:
        values: list[str] = await self.messages.evaluate_all(
            "items => items.map(li => li.dataset.id)"
        )
        return values

    # Evidence -----------------------------------------------------------------------

    async def shot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path))
        return path

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"{self.user}'s page opened dialogs: {self.dialogs}"
        assert self.errors == [], f"{self.user}'s page threw: {self.errors}"

    async def close(self) -> None:
        # The last look at every page is kept: it is what a failure report needs.
        try:
            await self.shot(f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.user)}-last")
        except PlaywrightError:
            pass
        await self.context.close()
