"""Multi-workspace installs: Bolt's OAuth flow against the fake, installations in the Chorus database
(slack_sdk's SQLAlchemy installation store on the store's own engine), SQLite and Postgres."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from fake_slack import SIGNING_SECRET, FakeSlack, event_callback, slash_body
from slack_support import (
    fake_slack_fixture,  # noqa: F401  (provides `fake`)
    final_updates,
    start_slack,
)

from bots.events import Conversation
from bots.reply import PublishForbidden, Reply
from support import wait_until

OAUTH_SECRETS = {
    "CHORUS_SLACK_SIGNING_SECRET": SIGNING_SECRET,
    "CHORUS_SLACK_CLIENT_ID": "1111.2222",
    "CHORUS_SLACK_CLIENT_SECRET": "client-secret",
}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_workspace_installs_chorus_and_its_own_token_is_used(
    tmp_path: Path, fake: FakeSlack, backend: str, request: pytest.FixtureRequest
) -> None:
    store_env = {"CHORUS_STORE__URL": request.getfixturevalue("postgres_url")} if backend == "postgres" else {}
    slack = await start_slack(tmp_path, fake, secrets=OAUTH_SECRETS, CHORUS_SLACK__OAUTH="true", **store_env)
    base = f"http://127.0.0.1:{slack.adapter.port}"
    try:
        async with aiohttp.ClientSession() as browser:
            async with browser.get(f"{base}/slack/install") as page:
                assert page.status == 200
                html = await page.text()
                state = re.search(r"state=([\w-]+)", html)
                assert f'href="{fake.url}/oauth/v2/authorize?' in html  # the install link follows api_base_url
                # Bolt's state cookie is Secure; a browser sends it back over https, here by hand.
                cookie = page.cookies["slack-app-oauth-state"].value
            assert state is not None and cookie == state.group(1)
            redirect = f"{base}/slack/oauth_redirect?code=the-code&state={state.group(1)}"
            async with browser.get(redirect, headers={"Cookie": f"slack-app-oauth-state={cookie}"}) as done:
                assert done.status == 200
        exchange = fake.calls_to("oauth.v2.access")
        assert len(exchange) == 1 and exchange[0].body["code"] == "the-code"
        assert slack.adapter.installations is not None
        bot = await slack.adapter.installations.async_find_bot(enterprise_id=None, team_id="T0SECOND")
        assert bot is not None and bot.bot_token == "xoxb-2-t0second"

        await slack.slash(slash_body("/create", "slogan a cafe", team_id="T0SECOND"))
        await wait_until(lambda: len(final_updates(fake)) == 1)
        await slack.idle()
        posted = fake.answered("chat.postMessage")[0]
        assert posted.headers["Authorization"] == "Bearer xoxb-2-t0second"
        checks = len(fake.calls_to("auth.test"))
        await slack.slash(slash_body("/help", "", team_id="T0SECOND"))
        await wait_until(lambda: len(fake.answered("chat.postEphemeral")) == 1)
        assert len(fake.calls_to("auth.test")) == checks  # the token check is remembered, not repeated

        publisher = slack.bot.chorus.publisher
        assert publisher is not None
        await publisher.publish(Conversation("slack", "T0SECOND", "C0DROPS"), Reply.text("a drop"))
        assert fake.answered("chat.postMessage")[-1].headers["Authorization"] == "Bearer xoxb-2-t0second"

        hook = fake.response_url("elsewhere")
        await slack.slash(slash_body("/create", "x", team_id="T0NOTINSTALLED", response_url=hook))
        await wait_until(lambda: len(fake.calls_to("response_url")) == 1)
        assert "install" in fake.calls_to("response_url")[0].body["text"].lower()
        assert len(fake.answered("chat.postMessage")) == 2
    finally:
        await slack.close()


async def _install(base: str) -> None:
    """A browser goes through the install page and Slack's redirect (the fake grants workspace T0SECOND)."""
    async with aiohttp.ClientSession() as browser:
        async with browser.get(f"{base}/slack/install") as page:
            state = re.search(r"state=([\w-]+)", await page.text())
            cookie = page.cookies["slack-app-oauth-state"].value
        assert state is not None
        redirect = f"{base}/slack/oauth_redirect?code=the-code&state={state.group(1)}"
        async with browser.get(redirect, headers={"Cookie": f"slack-app-oauth-state={cookie}"}) as done:
            assert done.status == 200


@pytest.mark.parametrize(
    "event",
    [{"type": "app_uninstalled"}, {"type": "tokens_revoked", "tokens": {"bot": ["U0CHORUS"]}}],
    ids=["app_uninstalled", "bot_token_revoked"],
)
async def test_a_workspace_that_removes_chorus_leaves_no_token_behind(
    tmp_path: Path, fake: FakeSlack, event: dict
) -> None:
    slack = await start_slack(tmp_path, fake, secrets=OAUTH_SECRETS, CHORUS_SLACK__OAUTH="true")
    try:
        await _install(f"http://127.0.0.1:{slack.adapter.port}")
        publisher = slack.bot.chorus.publisher
        assert publisher is not None
        drops_here = Conversation("slack", "T0SECOND", "C0DROPS")
        await publisher.publish(drops_here, Reply.text("a drop"))  # the workspace's client is cached now

        status, _, _ = await slack.event(event_callback(event, team="T0SECOND"))
        assert status == 200  # acknowledged, so Slack does not retry it
        await slack.idle()
        assert slack.adapter.installations is not None
        assert await slack.adapter.installations.async_find_bot(enterprise_id=None, team_id="T0SECOND") is None
        with pytest.raises(PublishForbidden):  # drops there pause instead of posting with a dead token
            await publisher.publish(drops_here, Reply.text("another drop"))
        hook = fake.response_url("after removal")
        await slack.slash(slash_body("/create", "x", team_id="T0SECOND", response_url=hook))
        await wait_until(lambda: len(fake.calls_to("response_url")) == 1)
        assert "install" in fake.calls_to("response_url")[0].body["text"].lower()
    finally:
        await slack.close()
