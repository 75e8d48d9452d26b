"""Pages that never show a traceback: an unexpected error is logged, with its traceback, on the server,
and the page says what it could not show; the rest of the page and the app keep working."""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import streamlit as st

log = logging.getLogger(__name__)


@contextmanager
def shown_or_logged(what: str) -> Iterator[None]:
    """Run one part of a page; on an unexpected error, log it and say that `what` could not be shown.

    `st.stop()` and `st.rerun()` raise BaseExceptions that are not Exceptions, so they pass through.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - whatever broke, the visitor gets a sentence, not a traceback
        log.exception("could not show %s", what)
        st.error(f"Could not show {what}: an unexpected error ({type(exc).__name__}). It is logged on the server "
                 "with the details; the rest of the app still works.")


def guarded(what: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """A page function wrapped in `shown_or_logged(what)`."""

    def wrap(page: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(page)
        def run() -> None:
            with shown_or_logged(what):
                page()

        return run

    return wrap
