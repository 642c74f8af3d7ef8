"""The engine thread: the one place that owns models, states and the conversation.

The UI sends commands (``tui.protocol``) through a queue and never waits for them. The thread
publishes events into an :class:`~tui.protocol.Outbox`, which the UI drains on a timer (about 30
times a second), so the engine never blocks on the UI and never touches a widget.

Stopping is not a queued command: :meth:`EngineWorker.stop` cancels the running generation
directly (the engine checks the flag after every token) and discards generation commands that
were queued before it.

Autosave (when enabled): after every change to the conversation (a finished or stopped turn, a
rewind, a fork…) the engine thread captures it and a :class:`~tui.autosaver.Autosaver` writes it
on its own thread, so saving never holds up the next reply. :class:`~tui.protocol.AutosaveSession`
is the final save at exit, and :meth:`EngineWorker.close` waits until it is written.

Nothing here imports Textual, so the worker is tested on its own with a real model.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from functools import partial
from pathlib import Path

import engine
from engine import Conversation, EngineError, Generation, Model, ThinkMode, Tokenizer
from engine.atomic import atomic_write_text
from engine.chat import clean_message
from engine.catalog import resolve_model_path
from engine.demo_models import demo_model_path
from engine.errors import StateModelMismatchError
from tui.autosaver import Autosaver
from tui.failures import report_failure
from tui.inspector import EngineInspector
from tui.protocol import (
    _GENERATING_COMMANDS, STATE_COMMANDS, AutosaveSession, ChatSettings, Command, ConversationInfo, Edit, Event,
    Export, LoadModel,
    ModelLoaded, ModelLoadFailed, ModelLoading, ModelSummary, NewConversation, Notice, Outbox,
    LoadState, PromptRejected, Regenerate, ReplyDelta, ReplyFailed, ReplyFinished, ResumeSession, Rewind, Role,
    SaveState, Send,
    Stats,
    TranscriptReplaced, TranscriptTruncated, TurnStarted, TurnView, _Shutdown,
)


#: Seconds between statistics events while generating.
STATS_INTERVAL = 0.1
#: Bytes per read while warming the page cache for a model file (progress granularity).
READ_CHUNK = 8 * 1024 * 1024
#: Seconds a wait for the autosaves to be written may take (at exit, before another model's
#: resume offer) before the app gives up on it (and at exit says so).
FINAL_SAVE_TIMEOUT = 30.0


class EngineWorker:
    """Owns the engine on one thread. Create, :meth:`start`, :meth:`submit`, :meth:`drain`, :meth:`close`."""

    def __init__(self, log_path: Path | None = None, autosave: bool = False) -> None:
        self.outbox = Outbox()
        self._commands: queue.Queue[tuple[int, Command]] = queue.Queue()
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()
        self._last_submitted = 0
        self._stopped_through = 0
        self._active: Generation | None = None
        self._current_seq = 0
        #: Sequence number of the last command the engine thread has finished with.
        self._done_through = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rwkv-engine", daemon=True)
        self._log_path = log_path
        #: Writes the autosave after every change to the conversation (None: autosave is off).
        self.autosaver = Autosaver(self._autosave_done) if autosave else None
        #: Why the latest autosave failed (one line), None once one succeeds; set on the saver thread.
        self.autosave_problem: str | None = None
        # Owned by the engine thread only:
        self.chat_model: Model | None = None
        self.chat_tokenizer: Tokenizer | None = None
        self.music_model: Model | None = None
        self.music_tokenizer: Tokenizer | None = None
        self.conversation: Conversation | None = None
        #: The state inspector's side: live numbers, diffs, branches, time_state and sessions.
        self.inspector = EngineInspector(self, self._emit)

    # ------------------------------------------------------------------ UI side (any thread)

    def start(self) -> None:
        self._thread.start()

    def submit(self, command: Command) -> int:
        """Queue a command; returns its sequence number."""
        with self._lock:
            seq = next(self._sequence)
            self._last_submitted = seq
            self._commands.put((seq, command))
        return seq

    def stop(self) -> bool:
        """Cancel the reply being generated and any queued generation. True if something stopped."""
        with self._lock:
            self._stopped_through = self._last_submitted
            active = self._active
        if active is not None and active.result is None:
            active.cancel()
            return True
        return False

    def drain(self) -> list[Event]:
        return self.outbox.drain()

    @property
    def busy(self) -> bool:
        """Whether a reply is being generated right now."""
        active = self._active
        return active is not None and active.result is None

    @property
    def settled(self) -> bool:
        """Whether every command submitted so far has been carried out (its events are queued)."""
        return self._done_through >= self._last_submitted

    def close(self, timeout: float = 5.0) -> bool:
        """Stop generating and end the thread (called when the app exits), then wait for the
        autosaves still to be written (up to :data:`FINAL_SAVE_TIMEOUT`). False when the thread did
        not end within ``timeout`` seconds, or the saves did not finish."""
        self._closing.set()
        self.stop()
        self._commands.put((0, _Shutdown()))
        if self._thread.is_alive():
            self._thread.join(timeout)
        ended = not self._thread.is_alive()
        if self.autosaver is not None and not self.autosaver.close(FINAL_SAVE_TIMEOUT):
            self.autosave_problem = f"the autosave did not finish within {FINAL_SAVE_TIMEOUT:.0f} s"
            ended = False
        return ended

    # ------------------------------------------------------------------ engine thread

    def _emit(self, event: Event) -> None:
        self.outbox.put(event)

    def _run(self) -> None:
        if self.autosaver is not None:
            self._remove_stale_autosave_temps()
        while True:
            seq, command = self._commands.get()
            self._current_seq = seq
            if isinstance(command, _Shutdown):
                return
            try:
                self._run_one(seq, command)
            finally:
                self._done_through = seq

    def _run_one(self, seq: int, command: Command) -> None:
        if isinstance(command, _GENERATING_COMMANDS) and seq <= self._stopped_through:
            if isinstance(command, Send):
                self._emit(PromptRejected(command.text, "stopped before it started"))
            return
        try:
            self._handle(command)
        except EngineError as exc:
            self._emit(Notice("error", str(exc)))
        except Exception as exc:  # an engine bug must not kill the thread or the app
            self._emit(Notice("error", self._report_failure(exc)))

    def _report_failure(self, exc: BaseException) -> str:
        return report_failure(exc, "engine failure", self._log_path)

    def _handle(self, command: Command) -> None:
        if isinstance(command, LoadModel):
            self._load(command)
        elif isinstance(command, Send):
            self._send(command)
        elif isinstance(command, Regenerate):
            conversation = self._require_conversation()
            if not conversation.turns:
                raise EngineError("nothing to regenerate yet: send a message first")
            self._apply(conversation, command.settings)
            index = len(conversation.turns) - 1
            generation = conversation.regenerate(command.settings.params)
            self._emit(TranscriptTruncated(index))
            self._generate(conversation, generation, index)
        elif isinstance(command, Edit):
            conversation = self._require_conversation()
            if not 0 <= command.index < len(conversation.turns):
                raise EngineError(f"there is no message {command.index + 1} to edit")
            if not clean_message(command.text):
                raise EngineError("the edited message is empty")
            self._apply(conversation, command.settings)
            generation = conversation.edit(command.index, command.text, command.settings.params)
            self._emit(TranscriptTruncated(command.index))
            self._generate(conversation, generation, command.index)
        elif isinstance(command, Rewind):
            conversation = self._require_conversation()
            try:
                # An evicted snapshot is rebuilt by re-feeding the recorded tokens (exact, slower).
                conversation.rewind(command.index, replay=True)
            except (IndexError, ValueError, RuntimeError) as exc:
                raise EngineError(str(exc)) from None
            self._emit(TranscriptTruncated(command.index))
            self._publish_conversation(conversation)
        elif isinstance(command, NewConversation):
            conversation = self._require_conversation()
            conversation.reset()
            conversation.system = command.system or None
            self._emit(TranscriptReplaced(()))
            self._publish_conversation(conversation)
        elif isinstance(command, Export):
            self._export(command)
        elif isinstance(command, SaveState):
            self._save_state(command)
        elif isinstance(command, LoadState):
            self._load_state(command)
        elif isinstance(command, AutosaveSession):
            self._final_save()
        elif isinstance(command, STATE_COMMANDS):
            self.inspector.handle(command)

    # ------------------------------------------------------------------ models

    def _load(self, command: LoadModel) -> None:
        demo = command.path is None
        try:
            if demo:
                path = self._demo_path(command.demo_kinds)
            else:
                path = resolve_model_path(command.path)  # type: ignore[arg-type]
            model = self._load_with_progress(command.role, path, command.device, command.dtype)
            tokenizer = engine.tokenizer_for_model(model, command.tokenizer)
        except EngineError as exc:
            self._emit(ModelLoadFailed(command.role, str(exc)))
            return
        except MemoryError:
            self._emit(ModelLoadFailed(command.role, f"{command.path}: not enough memory to load this model"))
            return
        except Exception as exc:  # torch and the OS raise many kinds; the app must hear about all
            self._emit(ModelLoadFailed(command.role, self._report_failure(exc)))
            return
        summary = ModelSummary.of(command.role, model, tokenizer, demo)
        if command.role == "chat":
            initial_state = model.bundled_state
            if command.state_path:
                try:
                    initial_state = self._read_state_file(command.state_path, model, command.state_orientation)
                except Exception as exc:  # whatever the file does, the model is fine and loads
                    self._emit(Notice("error", f"{self._state_file_problem(command.state_path, exc)}; "
                                               "starting from the model's initial state"))
            previous = self.conversation
            if previous is not None:
                # The previous model's conversation stays resumable: it is its model's autosave.
                self._autosave(previous)
            self.chat_model, self.chat_tokenizer = model, tokenizer
            self.conversation = Conversation(
                model, tokenizer,
                previous.params if previous is not None else None,
                system=previous.system if previous is not None else None,
                think=previous.think if previous is not None else ThinkMode.OFF,
                initial_state=initial_state,
            )
            self._emit(ModelLoaded(summary))
            self._emit(TranscriptReplaced(()))
            self._publish_conversation(self.conversation)
            if not command.state_path:
                if self.autosaver is not None:
                    # The offer must see the save just made, if it was this model's.
                    self.autosaver.flush(FINAL_SAVE_TIMEOUT)
                self.inspector.offer_resume(model)
            elif initial_state is not model.bundled_state and _is_session_file(command.state_path):
                try:  # --state with a session file: its transcript comes back too
                    self.inspector.handle(ResumeSession(command.state_path))
                except EngineError as exc:
                    self._emit(Notice("error", str(exc)))
        else:
            self.music_model, self.music_tokenizer = model, tokenizer
            self._emit(ModelLoaded(summary))

    @staticmethod
    def _demo_path(kinds: tuple[str, ...]) -> Path:
        error: EngineError | None = None
        for kind in kinds:
            try:
                return demo_model_path(kind)
            except EngineError as exc:
                error = error or exc
        assert error is not None
        raise error

    def _load_with_progress(self, role: Role, path: Path, device: str, dtype: str | None) -> Model:
        """Read the file once with progress (warming the page cache), then build the model.

        The engine memory-maps checkpoints, so after this read the build touches cached pages;
        the read is skipped when the file would not fit in free memory (it would only evict itself).
        """
        size = path.stat().st_size if path.is_file() else 0
        if size and size < _free_memory_bytes() // 2:
            done = 0
            self._emit(ModelLoading(role, str(path), "reading", 0.0, size))
            try:
                with open(path, "rb", buffering=0) as handle:
                    while not self._closing.is_set():
                        chunk = handle.read(READ_CHUNK)
                        if not chunk:
                            break
                        done += len(chunk)
                        self._emit(ModelLoading(role, str(path), "reading", min(done / size, 1.0), size))
            except OSError:
                pass  # the engine's loader reports unreadable files properly
        self._emit(ModelLoading(role, str(path), "building the model", None, size))
        return engine.load_model(path, device=device, dtype=dtype)

    def _state_file_problem(self, path: str, exc: BaseException) -> str:
        """One line on why the ``--state`` file could not be used."""
        if isinstance(exc, EngineError):
            return str(exc)
        if isinstance(exc, OSError):
            return f"{path}: cannot read it ({exc.strerror or exc})"
        return self._report_failure(exc)

    @staticmethod
    def _read_state_file(
        path: str, model: Model, orientation: str = "as-stored", allow_other_model: bool = False,
    ) -> engine.State:
        """Start state from a file (``--state``): rwkv-tui state or session files, or a state-tuning
        time_state file read in ``orientation``, checked against the model by the engine."""
        from engine.session import load_start_state

        return load_start_state(resolve_model_path(path), model, orientation=orientation,
                                allow_other_model=allow_other_model)

    def _save_state(self, command: SaveState) -> None:
        from engine import state_io

        conversation = self._require_conversation()
        written = state_io.save_state(
            Path(command.path).expanduser(), conversation.state, conversation.model, logits=conversation.logits,
        )
        self._emit(Notice(
            "information", f"Saved the state ({conversation.state.tokens_seen:,} tokens seen) to {written}",
        ))

    def _load_state(self, command: LoadState) -> None:
        from engine import state_io

        conversation = self._require_conversation()
        path = Path(command.path).expanduser()
        try:
            if state_io.is_state_file(path) and state_io.read_state_info(path).kind == "session":
                # A whole conversation: its transcript too.
                self.inspector.handle(ResumeSession(str(path), command.allow_other_model))
                return
            # Validated before anything changes.
            state = self._read_state_file(command.path, conversation.model, command.orientation,
                                          allow_other_model=command.allow_other_model)
        except StateModelMismatchError as exc:
            raise EngineError(
                f"{path.name}: saved from other weights (fingerprint {exc.file_fingerprint}; this model is "
                f"{exc.model_fingerprint}); tick “from other weights” in the Load dialog to load it anyway"
            ) from None
        conversation.reset(initial_state=state)
        self._emit(TranscriptReplaced(()))
        self._publish_conversation(conversation)
        self._emit(Notice(
            "information",
            f"Continuing from {Path(command.path).name} ({state.tokens_seen:,} tokens seen): a new conversation",
        ))

    # ------------------------------------------------------------------ chat

    def _require_conversation(self) -> Conversation:
        if self.conversation is None:
            raise EngineError("no chat model is loaded: load one with Ctrl+O or --model PATH")
        return self.conversation

    @staticmethod
    def _apply(conversation: Conversation, settings: ChatSettings) -> None:
        conversation.params = settings.params.validate()
        conversation.think = settings.think
        if not conversation.turns:
            # The system prompt is fed with the first message; later changes wait for a new chat.
            conversation.system = settings.system or None

    def _send(self, command: Send) -> None:
        if self.conversation is None:
            self._emit(PromptRejected(command.text, "no chat model is loaded: load one with Ctrl+O or --model PATH"))
            return
        conversation = self.conversation
        try:
            settings = command.settings
            settings.params.validate()
            self._apply(conversation, settings)
            generation = conversation.send(command.text, settings.params)
        except (EngineError, ValueError, RuntimeError) as exc:
            self._emit(PromptRejected(command.text, str(exc)))
            return
        self._generate(conversation, generation, len(conversation.turns) - 1)

    def _generate(self, conversation: Conversation, generation: Generation, index: int) -> None:
        turn = conversation.turns[index]
        state_bytes = turn.state_before.nbytes if turn.state_before is not None else 0
        tokens_before = turn.state_before.tokens_seen if turn.state_before is not None else 0
        with self._lock:
            self._active = generation
            # A stop pressed after this command was taken from the queue still counts.
            if self._stopped_through >= self._current_seq:
                generation.cancel()
        self._emit(TurnStarted(index, turn.user, turn.assistant_prefix.lstrip(" ")))
        stats = generation.stats
        self.inspector.attach(generation, conversation.state)
        next_stats = time.perf_counter() + STATS_INTERVAL
        try:
            for delta in generation:
                self._emit(ReplyDelta(index, delta))
                now = time.perf_counter()
                if now >= next_stats:
                    next_stats = now + STATS_INTERVAL
                    self._emit(Stats(
                        True, stats.tokens_per_second, stats.time_to_first_token, stats.generated_tokens,
                        stats.prompt_tokens, state_bytes, tokens_before + stats.prompt_tokens + stats.generated_tokens,
                    ))
                    self.inspector.publish()
        except Exception as exc:
            generation.cancel()
            with self._lock:
                self._active = None
            message = str(exc) if isinstance(exc, EngineError) else self._report_failure(exc)
            user = turn.user
            if index < len(conversation.turns) and conversation.turns[index] is turn:
                conversation.rewind(index)
            self._emit(ReplyFailed(index, user, message))
            self._publish_conversation(conversation)
            return
        with self._lock:
            self._active = None
        result = generation.result
        assert result is not None
        self.inspector.finish(conversation.state)
        self._emit(ReplyFinished(self._turn_view(conversation, index)))
        s = result.stats
        self._emit(Stats(
            False, s.tokens_per_second, s.time_to_first_token, s.generated_tokens, s.prompt_tokens,
            conversation.state.nbytes, conversation.state.tokens_seen,
        ))
        self._publish_conversation(conversation)

    @staticmethod
    def _turn_views(conversation: Conversation) -> tuple[TurnView, ...]:
        views = []
        for snapshot, t in zip(conversation.snapshots(), conversation.turns):
            views.append(TurnView(
                index=snapshot.turn, user=t.user, reply=t.reply,
                stop_reason=t.stop_reason.value if t.stop_reason is not None else None,
                generated_tokens=t.stats.generated_tokens if t.stats else 0,
                tokens_per_second=t.stats.tokens_per_second if t.stats else 0.0,
                has_snapshot=snapshot.kept, tokens_before=snapshot.tokens_seen,
                replay_tokens=snapshot.replay_tokens,
            ))
        return tuple(views)

    def _turn_view(self, conversation: Conversation, index: int) -> TurnView:
        return self._turn_views(conversation)[index]

    def _publish_conversation(self, conversation: Conversation) -> None:
        turns = self._turn_views(conversation)
        self._emit(ConversationInfo(
            turns=turns, tokens_seen=conversation.state.tokens_seen, state_bytes=conversation.state.nbytes,
            snapshots_kept=sum(1 for t in turns if t.has_snapshot), snapshot_bytes=conversation.snapshot_bytes,
            snapshot_budget=conversation.snapshot_budget,
        ))
        self.inspector.after_change(conversation)
        self._autosave(conversation)

    # ------------------------------------------------------------------ autosave

    def _autosave(self, conversation: Conversation) -> None:
        """Have ``conversation`` written as its model's autosave, in the background.

        An empty conversation leaves the autosave as it is (a new chat, or a rewind to the start,
        never overwrites the conversation that can still be resumed), and one whose reply is still
        being generated is saved when the reply ends.
        """
        from engine.session import autosave_path, capture_autosave, write_autosave

        if self.autosaver is None or not conversation.turns:
            return
        try:
            capture = capture_autosave(conversation)
        except RuntimeError:
            return  # a reply is under way; its end saves
        self.autosaver.submit(autosave_path(conversation.model), partial(write_autosave, capture))

    def _final_save(self) -> None:
        """Save the conversation as it is now (the app is exiting: :meth:`close` waits for the write)."""
        if self.conversation is not None:
            self._autosave(self.conversation)

    def _autosave_done(self, path: Path, error: BaseException | None) -> None:
        """After each autosave (saver thread): say when saving starts failing and when it works again."""
        if error is None:
            if self.autosave_problem is not None:
                self._emit(Notice("information", f"Autosaved the conversation again ({path})"))
            self.autosave_problem = None
            return
        problem = str(error) if isinstance(error, EngineError) else self._report_failure(error)
        if problem != self.autosave_problem:  # once per kind of failure, not after every turn
            self._emit(Notice("error", f"Conversation not autosaved: {problem} (the previous autosave is kept)"))
        self.autosave_problem = problem

    def _remove_stale_autosave_temps(self) -> None:
        from engine.session import remove_stale_autosave_temps

        try:
            remove_stale_autosave_temps()
        except Exception as exc:  # housekeeping must never stop the engine
            self._report_failure(exc)

    def _export(self, command: Export) -> None:
        conversation = self._require_conversation()
        if not conversation.turns:
            raise EngineError("nothing to export: the conversation is empty")
        text = conversation.to_json() if command.format == "json" else conversation.to_markdown()
        written = atomic_write_text(command.path, text if text.endswith("\n") else text + "\n")
        self._emit(Notice("information", f"Exported the conversation to {written}"))


def _is_session_file(path: str) -> bool:
    from engine import state_io

    try:
        target = Path(path).expanduser()
        return state_io.is_state_file(target) and state_io.read_state_info(target).kind == "session"
    except (EngineError, OSError):
        return False


def _free_memory_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
