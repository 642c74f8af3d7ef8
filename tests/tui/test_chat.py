"""Chat interactions on the real app: the real engine on a tiny random model, driven by Pilot."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Collapsible, Markdown

from tests.tui.conftest import notices, set_sampling, start, wait_idle, wait_until
from tui.protocol import ReplyDelta, ReplyFinished, TurnStarted, TurnView
from tui.terminal_text import visible_controls
from tui.widgets.message_view import MessageView


def roles(app) -> list[tuple[str, int]]:
    return [(v.role, v.index) for v in app.chat_pane.views()]


async def test_send_streams_the_reply_into_markdown(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        set_sampling(app, max_tokens=100_000)
        await pilot.press(*"hello there", "enter")
        assert app.chat_pane.prompt.text == ""  # cleared at once, the engine works meanwhile
        await wait_until(pilot, lambda: len(app.chat_pane.views()) == 2, what="the reply to start")
        reply = app.chat_pane.view_for(0, "assistant")
        # Text appears in steps while the engine is still generating.
        await wait_until(pilot, lambda: reply.streaming and len(reply.answer) > 0, what="streamed text")
        partial = reply.answer
        await wait_until(pilot, lambda: reply.streaming and len(reply.answer) > len(partial), what="more text")
        assert reply.answer.startswith(partial)
        await pilot.press("escape")
        await wait_idle(pilot, app)
        turn = app.worker.conversation.turns[0]
        assert reply.text == turn.reply and not reply.streaming
        shown = reply.query_one(".message-body", Markdown).source
        # One full update at the end: exactly the engine's text, its control characters made visible.
        assert shown == visible_controls(turn.reply)
        assert roles(app) == [("user", 0), ("assistant", 0)]
        assert app.chat_pane.view_for(0, "user").text == "hello there"
        status = str(app.query_one("#status-line").render_stats())
        assert f"{turn.stats.generated_tokens} tokens" in status and "tok/s" in status and "state" in status


async def test_enter_sends_and_ctrl_j_inserts_a_newline(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        await pilot.press(*"line one", "ctrl+j", *"line two")
        assert app.chat_pane.prompt.text == "line one\nline two"
        assert app.chat_pane.views() == []
        await pilot.press("enter")
        await wait_idle(pilot, app)
        assert app.worker.conversation.turns[0].user == "line one\nline two"


async def test_escape_stops_generation(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        set_sampling(app, max_tokens=100_000)
        await pilot.press(*"never stop", "enter")
        await wait_until(pilot, lambda: app.worker.busy and app.chat_pane.view_for(0, "assistant") is not None)
        await pilot.press("escape")
        await wait_idle(pilot, app, timeout=60)  # far below the 100,000 tokens a broken stop would write
        turn = app.worker.conversation.turns[0]
        assert turn.stop_reason.value == "cancelled" and turn.stats.generated_tokens < 100_000
        header = str(app.chat_pane.view_for(0, "assistant")._header())
        assert "stopped" in header
        # The app goes on: the next message is answered.
        set_sampling(app, max_tokens=8)
        await pilot.press(*"next", "enter")
        await wait_idle(pilot, app)
        assert len(app.worker.conversation.turns) == 2


async def test_regenerate_restores_the_snapshot(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        for text in ("first", "second"):
            await pilot.press(*text, "enter")
            await wait_idle(pilot, app)
        before = app.worker.conversation.turns[1]
        first_reply = before.reply
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.worker.conversation.turns[1] is not before, what="a new turn")
        await wait_idle(pilot, app)
        after = app.worker.conversation.turns[1]
        # The same seed on the same restored state: the same reply; only this turn was prefilled.
        assert after.reply == first_reply
        assert after.stats.prompt_tokens <= len("\n\nUser: second\n\nAssistant:")
        assert roles(app) == [("user", 0), ("assistant", 0), ("user", 1), ("assistant", 1)]
        assert app.chat_pane.view_for(1, "assistant").text == after.reply


async def test_edit_and_resend_an_earlier_message(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        for text in ("alpha", "beta"):
            await pilot.press(*text, "enter")
            await wait_idle(pilot, app)
        first_user = app.chat_pane.view_for(0, "user")
        first_user.focus()
        await pilot.press("e")
        assert app.chat_pane.editing_index == 0 and app.chat_pane.prompt.text == "alpha"
        assert app.chat_pane.has_class("-editing")
        await pilot.press("end", *" prime", "enter")
        await wait_idle(pilot, app)
        turns = app.worker.conversation.turns
        assert [t.user for t in turns] == ["alpha prime"]
        assert turns[0].stats.prompt_tokens == len("User: alpha prime\n\nAssistant:")  # from the zero state
        assert roles(app) == [("user", 0), ("assistant", 0)]
        assert app.chat_pane.view_for(0, "user").text == "alpha prime"
        assert not app.chat_pane.has_class("-editing")


async def test_edit_last_with_up_on_an_empty_prompt_and_escape_cancels(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        await pilot.press(*"draft me", "enter")
        await wait_idle(pilot, app)
        await pilot.press("up")
        assert app.chat_pane.editing_index == 0 and app.chat_pane.prompt.text == "draft me"
        await pilot.press("escape")
        assert app.chat_pane.editing_index is None and app.chat_pane.prompt.text == ""


async def test_think_sections_are_folded(make_app) -> None:
    """A G1 reply's <think> part goes into a collapsed section; the answer is the message body."""
    app = make_app(model=None)
    async with app.run_test(size=(110, 36)) as pilot:
        await pilot.pause(0.2)
        outbox = app.worker.outbox
        outbox.put(TurnStarted(0, "What is 2+2?", "<think"))
        outbox.put(ReplyDelta(0, ">\nAdd two and two"))
        await wait_until(pilot, lambda: app.chat_pane.view_for(0, "assistant") is not None)
        await wait_until(pilot, lambda: app.chat_pane.view_for(0, "assistant").think != "")
        view = app.chat_pane.view_for(0, "assistant")
        collapsible = view.query_one(Collapsible)
        assert view.has_class("-has-think") and collapsible.collapsed
        assert "Thinking" in str(collapsible.title)
        reply = "<think>\nAdd two and two.\n</think>\nIt is **4**."
        outbox.put(ReplyDelta(0, ".\n</think>\nIt is **4**."))
        outbox.put(ReplyFinished(TurnView(0, "What is 2+2?", reply, "stop string", 12, 0.0, True, 0)))
        await wait_until(pilot, lambda: not view.streaming)
        assert view.think.strip() == "Add two and two." and view.answer == "It is **4**."
        assert view.query_one(".message-body", Markdown).source == "It is **4**."
        assert collapsible.collapsed and "Thought for 4 words" in str(collapsible.title)


async def test_copy_a_focused_message(make_app, monkeypatch) -> None:
    app = make_app()
    copied: list[str] = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    monkeypatch.setattr("tui.app.copy_native", lambda text: None)
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        await pilot.press(*"copy this", "enter")
        await wait_idle(pilot, app)
        await pilot.click(MessageView, offset=(4, 1))  # the first message: the user's
        assert isinstance(app.focused, MessageView)
        await pilot.press("y")
        await pilot.pause(0.2)
        assert copied == ["copy this"]
        await pilot.press("f8")  # copy the last reply from anywhere in the chat
        await pilot.pause(0.2)
        assert copied[-1] == app.worker.conversation.turns[0].reply
        assert any("Copied" in n.message for n in notices(app))


async def test_export_markdown_and_json(make_app, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        await pilot.press(*"export me", "enter")
        await wait_idle(pilot, app)
        for key, name in (("ctrl+s", "chat.md"), ("ctrl+shift+s", "chat.json")):
            if key == "ctrl+s":
                await pilot.press(key)
            else:
                app.chat_pane.action_export("json")
            await pilot.pause(0.2)
            path_input = app.screen.query_one("#path")
            path_input.value = str(tmp_path / name)
            await pilot.press("enter")
            await wait_until(pilot, lambda: (tmp_path / name).exists(), what=name)
        assert "## User\n\nexport me" in (tmp_path / "chat.md").read_text()
        assert '"user": "export me"' in (tmp_path / "chat.json").read_text()


async def test_new_conversation_clears_the_chat(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        await pilot.press(*"hi", "enter")
        await wait_idle(pilot, app)
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not app.chat_pane.views())
        await wait_until(pilot, lambda: app.worker.conversation.turns == [])


async def test_sending_while_generating_keeps_the_text(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        set_sampling(app, max_tokens=100_000)
        await pilot.press(*"long one", "enter")
        await wait_until(pilot, lambda: app.worker.busy)
        await pilot.press("p", "enter")
        assert app.chat_pane.prompt.text == "p"
        assert any("Esc" in n.message for n in notices(app))
        await pilot.press("escape")
        await wait_idle(pilot, app)


async def test_the_list_follows_the_reply_unless_the_user_scrolled_up(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await start(pilot, app)
        set_sampling(app, max_tokens=100_000)
        await pilot.press(*"talk a lot", "enter")
        messages = app.chat_pane.messages
        await wait_until(pilot, lambda: messages.max_scroll_y > 3, what="the reply to overflow the view")
        await wait_until(pilot, lambda: messages.scroll_y >= messages.max_scroll_y - 1, what="pinned to the bottom")
        messages.scroll_home(animate=False)
        await pilot.pause(0.1)
        grown_from = messages.max_scroll_y
        await wait_until(pilot, lambda: messages.max_scroll_y > grown_from + 2, what="more text")
        assert messages.scroll_y == 0  # the reader's position is left alone
        messages.scroll_end(animate=False)
        await pilot.pause(0.1)
        grown_from = messages.max_scroll_y
        await wait_until(pilot, lambda: messages.max_scroll_y > grown_from + 2, what="more text")
        # Back at the bottom: following again.
        await wait_until(pilot, lambda: messages.scroll_y >= messages.max_scroll_y - 1, what="following again")
        await pilot.press("escape")
        await wait_idle(pilot, app)


async def test_a_long_transcript_keeps_mounts_local(make_app) -> None:
    """Mounting a message must not restyle the whole transcript.

    Textual restyles every sibling subtree on each mount when a widget may match a CSS rule
    with :first-child/:last-child; a universal selector in such a rule once made every message
    qualify, and a chat of 200 turns spent 15 s restyling per new turn.
    """
    from textual.widgets._markdown import MarkdownBlock

    from tui.protocol import TranscriptReplaced

    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        turns = tuple(
            TurnView(i, f"question {i}", f"First paragraph {i}.\n\nSecond paragraph.", "stop token", 9, 50.0, False, None)
            for i in range(30)
        )
        await app.chat_pane.on_transcript_replaced(TranscriptReplaced(turns))
        await pilot.pause(0.2)
        views = app.chat_pane.views()
        assert len(views) == 60 and [v.index for v in views[:4]] == [0, 0, 1, 1]
        assert not any(v._has_order_style for v in views)  # noqa: SLF001 - the flag Textual's mount consults
        blocks = list(views[-1].query_one(".message-body", Markdown).query(MarkdownBlock))
        assert len(blocks) >= 2
        assert blocks[-1].styles.margin.bottom == 0 and blocks[0].styles.margin.bottom > 0


async def test_a_long_chat_shows_its_latest_messages_and_the_rest_on_request(make_app) -> None:
    from tui.panes.chat import SHOWN_MESSAGES
    from tui.protocol import TranscriptReplaced
    from tui.widgets.earlier_messages import EarlierMessages

    def transcript(count: int) -> TranscriptReplaced:
        return TranscriptReplaced(tuple(
            TurnView(i, f"question {i}", f"answer {i}", "stop token", 3, 50.0, False, None) for i in range(count)
        ))

    app = make_app()
    async with app.run_test(size=(110, 36)) as pilot:
        await start(pilot, app)
        turns = SHOWN_MESSAGES // 2 + 10
        await app.chat_pane.on_transcript_replaced(transcript(turns))
        await pilot.pause(0.2)
        views = app.chat_pane.views()
        earlier = app.query_one(EarlierMessages)
        assert [v.display for v in views] == [False] * 20 + [True] * SHOWN_MESSAGES
        assert [v.deferred for v in views] == [True] * 20 + [False] * SHOWN_MESSAGES
        assert views[1].query_one(".message-body", Markdown).source == "" and views[1].text == "answer 0"
        assert earlier.display and "20 earlier messages hidden" in str(earlier.render())
        # A new turn keeps the window moving (the event the engine sends for the next turn).
        await app.chat_pane.on_turn_started(TurnStarted(turns, "one more", ""))
        await pilot.pause(0.1)
        assert len(app.chat_pane.views()) == 2 * turns + 2
        assert sum(not v.display for v in app.chat_pane.views()) == 22
        await app.chat_pane.on_reply_finished(ReplyFinished(TurnView(turns, "one more", "ok", "stop token", 1, 1.0, True, 0)))
        # Enter on the line shows everything; scrolling back works as before.
        earlier.focus()
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert all(v.display for v in app.chat_pane.views()) and not earlier.display
        # Hidden messages were mounted without parsing their text; shown, they render it.
        await pilot.pause(0.2)
        first = app.chat_pane.views()[1]
        assert first.query_one(".message-body", Markdown).source == "answer 0" and not first.deferred
        # A new conversation starts windowed again.
        await app.chat_pane.on_transcript_replaced(transcript(turns))
        await pilot.pause(0.1)
        assert sum(not v.display for v in app.chat_pane.views()) == 20 and earlier.display
