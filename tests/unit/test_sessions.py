"""Each thread sends through its own HTTP session; the owner closes them all."""

from __future__ import annotations

import threading

import requests
from calabi_exporter.sessions import ThreadSessions


def test_each_thread_gets_its_own_session_and_keeps_it() -> None:
    sessions = ThreadSessions(lambda session: session.headers.update({"User-Agent": "test/1"}))
    seen: list[requests.Session] = []

    def use() -> None:
        first = sessions.get()
        assert sessions.get() is first
        seen.append(first)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len({id(session) for session in seen}) == 3
    assert all(session.headers["User-Agent"] == "test/1" for session in seen)


def test_closing_closes_the_session_of_every_thread() -> None:
    sessions = ThreadSessions()
    closed: list[requests.Session] = []
    mine = sessions.get()
    other: list[requests.Session] = []
    thread = threading.Thread(target=lambda: other.append(sessions.get()))
    thread.start()
    thread.join(timeout=10)
    for session in (mine, other[0]):
        original = session.close
        session.close = lambda s=session, close=original: (closed.append(s), close())[1]  # type: ignore[method-assign]

    sessions.close()

    assert closed == [mine, other[0]]
