"""Line input that never blocks the session loop.

`KeyReader` reads a terminal key by key in cbreak mode (no echo, no line editing; Ctrl-C still raises
KeyboardInterrupt), so the live view can draw the line being typed below the progress. `LineReader` reads
whole lines of a pipe or file in a thread (for `capnas chat < script.txt` and non-TTY sessions)."""

from __future__ import annotations

import codecs
import os
import queue
import select
import sys
import termios
import threading
import tty
from collections import deque
from typing import IO

QUIT = "/quit"  # Ctrl-D on an empty line of a terminal
END = "\x04"  # the end of piped input: leave once nothing runs (a run going on is waited for)


class KeyReader:
    """Keys of a terminal: printable characters edit `buffer`; Enter ends a line; Backspace, Ctrl-U (clear)
    and Ctrl-D (quit, on an empty line) work; escape sequences (arrows) are ignored."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.fd = (stream or sys.stdin).fileno()
        self.buffer = ""
        self._lines: deque[str] = deque()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._escape = 0  # 1: just after ESC, 2: inside a sequence
        self._saved: list | None = None

    def __enter__(self) -> KeyReader:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)  # keep what was typed ahead
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
            self._saved = None

    def poll(self, timeout: float) -> str | None:
        """A finished line, waiting at most `timeout` seconds for keys; None if there is none yet."""
        if not self._lines:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if ready:
                data = os.read(self.fd, 4096)
                self.feed(self._decoder.decode(data) if data else "\x04")
        return self._lines.popleft() if self._lines else None

    def feed(self, text: str) -> None:
        for ch in text:
            if self._escape == 1:  # the key after ESC: a sequence (ESC [ ..., ESC O x) or an Alt-key
                self._escape = 2 if ch in "[O" else 0
            elif self._escape == 2:  # ESC [ 1 ; 5 A: skip up to the final letter or '~'
                self._escape = 0 if ch.isalpha() or ch == "~" else 2
            elif ch == "\x1b":
                self._escape = 1
            elif ch in "\r\n":
                self._lines.append(self.buffer)
                self.buffer = ""
            elif ch in "\x7f\x08":
                self.buffer = self.buffer[:-1]
            elif ch == "\x15":
                self.buffer = ""
            elif ch == "\x04":
                if not self.buffer:
                    self._lines.append(QUIT)
            elif ch == "\t":
                self.buffer += " "
            elif ch.isprintable():
                self.buffer += ch


class LineReader:
    """Lines of a non-terminal stream, read in a daemon thread; the end of the stream reads as `END`."""

    buffer = ""  # nothing is drawn while typing: the terminal (if any) echoes

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdin
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="chat-input", daemon=True).start()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _read(self) -> None:
        for line in self._stream:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(END)

    def poll(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
