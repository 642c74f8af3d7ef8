"""MIDI output ports through python-rtmidi: discovery on every API, the user's choice, sinks.

A sink is anything that accepts raw MIDI messages; the player only talks to sinks, so tests
use ``RecordingSink`` and the app can offer "no output" without special cases.

Facts of the platform shape this module (each checked against jackd 1.9 and python-rtmidi 1.5):

- RtMidi's ALSA back end fails outright (and prints to the C stderr) where ``/dev/snd/seq`` is
  missing.
- A JACK destination that goes away produces no error at all — sends just vanish — so the sink
  checks that its destination is still listed.
- A JACK server that dies is not noticed by its clients either: the port list they read is the
  dead server's shared memory, still showing every port. The sink therefore also checks that the
  server still accepts connections on its socket (JACK2's; where there is none, e.g. PipeWire's
  JACK, this check is skipped).
- Closing a client of a dead server is safe only until another client is opened in the process:
  after that, libjack crashes the process (SIGSEGV) in the close. So every client is opened and
  closed under one lock, and the clients of a dead server are closed before any new one opens.
- libjack prints its complaints about a dead server from its own threads, straight to the C
  stderr, where they would garble a full-screen UI: they are silenced (``_silence_libjack``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import reprlib
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

from engine.music.errors import MidiPortError

DEFAULT_CLIENT_NAME = "rwkv-tui"
DEFAULT_VIRTUAL_PORT = "rwkv-tui out"
#: Long enough for a few JACK process cycles at any usual buffer size.
JACK_FLUSH_SECONDS = 0.1
JACK_CONNECT_SETTLE_SECONDS = 0.15


class MidiSink(Protocol):
    """Where the player sends raw MIDI bytes."""

    description: str

    def send(self, message: Sequence[int]) -> None:
        """Send one message now; raise MidiPortError if the port is gone."""

    def check(self) -> str | None:
        """A one-line problem if the destination has gone away, else None (cheap, polled)."""

    def close(self) -> None: ...


@dataclass
class RecordingSink:
    """A sink for tests: records (monotonic time, message bytes); can be told to fail."""

    description: str = "recording sink"
    fail_after: int | None = None  # raise MidiPortError on the send after this many
    vanish: bool = False  # check() reports the port as gone
    sent: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)
    closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, message: Sequence[int]) -> None:
        with self._lock:
            if self.closed:
                raise MidiPortError("recording sink is closed")
            if self.fail_after is not None and len(self.sent) >= self.fail_after:
                raise MidiPortError("recording sink: port disappeared")
            self.sent.append((time.monotonic(), tuple(message)))

    def check(self) -> str | None:
        return "recording sink: port disappeared" if self.vanish else None

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[tuple[int, ...]]:
        with self._lock:
            return [m for _, m in self.sent]


# --------------------------------------------------------------------------- rtmidi

#: Held while any MIDI client is opened or closed, and while the C stderr is redirected (two
#: threads redirecting at once would leave it pointing at /dev/null for good).
_clients_lock = threading.RLock()
#: Open sinks, to close a dead JACK server's clients before any new client opens.
_open_sinks: "weakref.WeakSet[RtMidiSink]" = weakref.WeakSet()


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    """Silence what the ALSA and JACK C libraries print while probing (it would garble a TUI)."""
    with _clients_lock, _stderr_redirected():
        yield


@contextlib.contextmanager
def _stderr_redirected() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _rtmidi():  # noqa: ANN202 - the module
    # Never let libjack spawn a server behind the user's back while we only look for ports.
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    try:
        import rtmidi
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MidiPortError(f"python-rtmidi is not available ({exc})") from None
    _silence_libjack()
    return rtmidi


_libjack_silenced: list[bool] = []


def _silence_libjack() -> None:
    """Send libjack's error and info lines nowhere (once).

    libjack prints them from its own threads straight to the C stderr, where they garble a
    full-screen UI (a dead server makes several). They cannot go to a Python callback: closing
    a client cancels libjack's threads (pthread_cancel), possibly inside the callback, which
    leaves the interpreter's lock held for good (the app froze so). So they go to ``strlen``,
    a C function that only reads its argument.
    """
    if _libjack_silenced:
        return
    _libjack_silenced.append(True)
    path = _loaded_libjack()
    if path is None:
        return  # rtmidi was built without JACK, or this is not Linux: nothing to silence
    try:
        libjack = ctypes.CDLL(path)  # the copy rtmidi loaded (its wheel bundles its own)
        no_op = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p)
    except (OSError, AttributeError):
        return
    for setter in ("jack_set_error_function", "jack_set_info_function"):
        function = getattr(libjack, setter, None)
        if function is not None:
            function.argtypes = [ctypes.c_void_p]
            function.restype = None
            function(no_op)


def _loaded_libjack() -> str | None:
    """The path of the libjack this process has loaded, from /proc/self/maps (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip() if line.count(" ") >= 5 else ""
                if os.path.basename(path).startswith("libjack"):
                    return path
    except OSError:
        pass
    return None


def jack_server_socket() -> str | None:
    """The socket of the JACK2 server our clients use, if it is a JACK2 server on this machine.

    JACK2 listens on ``/dev/shm/jack_<server>_<uid>_0`` (server: ``$JACK_DEFAULT_SERVER`` or
    "default"). None when there is no such socket (no server, or another JACK implementation).
    """
    server = os.environ.get("JACK_DEFAULT_SERVER") or "default"
    path = f"/dev/shm/jack_{server}_{os.getuid()}_0"
    return path if _accepts_connections(path) else None


def _accepts_connections(path: str) -> bool:
    """Whether a server listens on this UNIX socket (a killed server leaves the file behind)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _close_clients_of_dead_servers() -> None:
    """Close our JACK clients whose server is gone, before a new client opens (lock held)."""
    for sink in list(_open_sinks):
        if sink.server_gone():
            sink.close(reason=f"the JACK server stopped: {sink.description} is gone")


def _api_names() -> dict[str, int]:
    rtmidi = _rtmidi()
    names = {}
    for api in rtmidi.get_compiled_api():
        if api == rtmidi.API_RTMIDI_DUMMY:
            continue
        short = rtmidi.get_api_name(api)
        names[_API_LABELS.get(short, rtmidi.get_api_display_name(api))] = api
    return names


_API_LABELS = {"alsa": "ALSA", "jack": "JACK", "core": "CoreMIDI", "windows_mm": "WinMM", "web": "WebMIDI"}


@dataclass(frozen=True)
class PortInfo:
    api: str  # "ALSA", "JACK", "CoreMIDI", "Windows MultiMedia"
    name: str


@dataclass
class PortListing:
    ports: list[PortInfo]
    #: One line per API that could not be used, e.g. "ALSA: no sequencer (/dev/snd/seq missing)".
    problems: list[str]


def _explain(api: str, exc: Exception) -> str:
    text = str(exc)
    if api == "ALSA" and not os.path.exists("/dev/snd/seq"):
        return "ALSA: no sequencer on this system (/dev/snd/seq is missing)"
    if api == "JACK" and "not running" in text.lower():
        return "JACK: no JACK server is running"
    return f"{api}: {text.split(':')[-1].strip() or type(exc).__name__}"


def list_output_ports(client_name: str = DEFAULT_CLIENT_NAME) -> PortListing:
    """Output ports of every compiled API; APIs that cannot start are reported, not raised."""
    rtmidi = _rtmidi()
    ports: list[PortInfo] = []
    problems: list[str] = []
    for api_name, api in _api_names().items():
        try:
            with _quiet_c_stderr():
                _close_clients_of_dead_servers()
                out = rtmidi.MidiOut(rtapi=api, name=client_name)
                names = out.get_ports()
                out.delete()
        except Exception as exc:  # rtmidi.SystemError and friends
            problems.append(_explain(api_name, exc))
            continue
        ports.extend(PortInfo(api_name, name) for name in names)
    return PortListing(ports, problems)


@dataclass(frozen=True)
class PortChoice:
    """The user's output choice, small enough for a settings file.

    ``name`` matches a destination exactly or, failing that, as a substring (port numbers
    and suffixes change between sessions). ``virtual`` creates a port others connect to.
    """

    api: str
    name: str
    virtual: bool = False

    def to_setting(self) -> str:
        return f"{'virtual' if self.virtual else 'port'}:{self.api}:{self.name}"

    @classmethod
    def from_setting(cls, text: str) -> "PortChoice":
        kind, sep, rest = text.partition(":")
        api, sep2, name = rest.partition(":")
        if not sep or not sep2 or kind not in ("port", "virtual") or not api or not name:
            raise MidiPortError(f"MIDI port setting {_quoted(text)} is not of the form port:API:NAME or virtual:API:NAME")
        return cls(api, name, kind == "virtual")

    def describe(self) -> str:
        return f"virtual port {self.name!r} ({self.api})" if self.virtual else f"{self.name} ({self.api})"


class RtMidiSink:
    """An open rtmidi output port. Thread-safe: another thread may close it (see
    ``_close_clients_of_dead_servers``) while the player sends."""

    def __init__(self, choice: PortChoice, client_name: str = DEFAULT_CLIENT_NAME) -> None:
        rtmidi = _rtmidi()
        apis = _api_names()
        api = next((v for k, v in apis.items() if k.lower() == choice.api.lower()), None)
        if api is None:
            raise MidiPortError(f"MIDI API {_quoted(choice.api)} is not available here (have: {', '.join(apis) or 'none'})")
        self.choice = choice
        self.description = choice.describe()
        self._closed = True  # until the port is open
        self._closed_reason: str | None = None
        self._lock = threading.Lock()
        #: The JACK2 server socket to watch (None: not JACK, or no way to tell).
        self._server_socket: str | None = None
        with _clients_lock:
            self._open(rtmidi, api, choice, client_name)
            self._closed = False
            self._sent_any = False
            _open_sinks.add(self)

    def _open(self, rtmidi, api: int, choice: PortChoice, client_name: str) -> None:  # noqa: ANN001
        try:
            with _quiet_c_stderr():
                _close_clients_of_dead_servers()
                self._out = rtmidi.MidiOut(rtapi=api, name=client_name)
        except Exception as exc:
            raise MidiPortError(f"cannot open {choice.describe()}: {_explain(choice.api, exc)}") from None
        if choice.api.upper() == "JACK":
            self._server_socket = jack_server_socket()
        try:
            if choice.virtual:
                self._out.open_virtual_port(choice.name)
                self.destination = None
            else:
                names = self._out.get_ports()
                index = match_port(names, choice.name)
                if index is None:
                    shown = ", ".join(names) if names else "none"
                    raise MidiPortError(f"MIDI port {_quoted(choice.name)} ({_quoted(choice.api)}) not found; "
                                        f"available: {shown}")
                self.destination = names[index]
                self.description = f"{self.destination} ({choice.api})"  # the port it resolved to
                self._out.open_port(index, "out")
                if choice.api == "JACK":
                    # jack_connect returns before the new connection carries data: messages sent
                    # in the next cycles (the program table!) would be lost. Let it settle.
                    time.sleep(JACK_CONNECT_SETTLE_SECONDS)
        except MidiPortError:
            self._out.delete()
            raise
        except Exception as exc:
            self._out.delete()
            raise MidiPortError(f"cannot open {choice.describe()}: {exc}") from None

    def server_gone(self) -> bool:
        """Whether this is a JACK client whose server has stopped (cheap: one local connect)."""
        return self._server_socket is not None and not _accepts_connections(self._server_socket)

    def send(self, message: Sequence[int]) -> None:
        with self._lock:
            if self._closed:
                raise MidiPortError(self._closed_reason or f"{self.description} is closed")
            try:
                self._out.send_message(list(message))
                self._sent_any = True
            except Exception as exc:
                raise MidiPortError(f"{self.description}: {exc}") from None

    def check(self) -> str | None:
        with self._lock:
            if self._closed:
                return self._closed_reason or f"{self.description} is closed"
            if self.server_gone():
                return f"the JACK server stopped: {self.description} is gone"
            if self.destination is None:
                return None
            try:
                present = self.destination in self._out.get_ports()
            except Exception as exc:
                return f"{self.description}: {exc}"
        return None if present else f"MIDI port {self.destination} ({self.choice.api}) disappeared"

    def close(self, reason: str | None = None) -> None:
        """Close the port (safe to call more than once); ``reason`` is what a later send says."""
        with _clients_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            self._closed_reason = reason
            _open_sinks.discard(self)
            if self.choice.api == "JACK" and self._sent_any and not self.server_gone():
                # JACK delivers MIDI in its next process cycle; closing the port at once drops
                # what is still queued, which at the end of a piece is the silence (all notes off).
                time.sleep(JACK_FLUSH_SECONDS)
            with contextlib.suppress(Exception):
                self._out.close_port()
            with contextlib.suppress(Exception):
                self._out.delete()


def _quoted(text: str) -> str:
    """A name from a settings file, quoted short and on one line for a message."""
    return _SHORT.repr(text)


_SHORT = reprlib.Repr()
_SHORT.maxstring = 60


def match_port(names: Sequence[str], wanted: str) -> int | None:
    """Index of the port a choice's name means: the exact name, else the first that contains it
    (any case). The one rule for opening a port and for showing which port a choice plays to."""
    if wanted in names:
        return names.index(wanted)
    lowered = wanted.lower()
    return next((i for i, name in enumerate(names) if lowered in name.lower()), None)


def open_sink(choice: PortChoice, client_name: str = DEFAULT_CLIENT_NAME) -> RtMidiSink:
    """Open the chosen port (or create the virtual port); MidiPortError in one line if impossible."""
    return RtMidiSink(choice, client_name)
