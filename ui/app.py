"""The human-judging web app: one entry point with `st.navigation`.

Run with `streamlit run ui/app.py` (the `debate ui` verb does this) and `DEBATE_RESULTS` naming the
results folder. Everyone logs in with an access token typed into the login field; the token is
checked against the store on every rerun, so a revoked token stops working at once. The navigation is
built after login from the role: a visitor gets the login page only, a judge the judging page only,
an admin the admin pages too, so no page name or path reaches anyone whose role does not list it (and
each admin page still refuses anyone without an admin token). No page shows a traceback: an unexpected
error is logged and the page says what it could not show.
"""

from __future__ import annotations

import os
from typing import Optional

import streamlit as st

from judges.human_queue import HumanQueue, JudgeAccount
from debate.store import Store
from ui.page_errors import shown_or_logged

RESULTS_ENV = "DEBATE_RESULTS"
SESSION_KEYS = ("token", "slot_id", "lease", "done", "beliefs_seen", "notice")


def results_folder() -> str:
    """The results folder the app serves (`$DEBATE_RESULTS`, default "results")."""
    return os.environ.get(RESULTS_ENV, "results")


@st.cache_resource(show_spinner=False)
def _store(folder: str) -> Store:
    return Store(folder)


@st.cache_resource(show_spinner=False)
def _queue(folder: str) -> HumanQueue:
    return HumanQueue(_store(folder))


def get_store() -> Store:
    return _store(results_folder())


def get_queue() -> HumanQueue:
    return _queue(results_folder())


def current_user() -> Optional[JudgeAccount]:
    """The logged-in judge, re-checked against the store now; a revoked token logs the session out."""
    token = st.session_state.get("token")
    if not token:
        return None
    judge = get_queue().login(token)
    if judge is None:
        logout()
        st.session_state["auth_error"] = "Your access token is no longer valid (revoked or wrong). Log in again."
    return judge


def logout() -> None:
    for key in SESSION_KEYS:
        st.session_state.pop(key, None)


def require_user(admin: bool = False) -> JudgeAccount:
    """The logged-in user, or stop the page with an error (admin pages: admins only)."""
    user = current_user()
    if user is None:
        st.error("Log in first.")
        st.stop()
    if admin and not user.admin:
        st.error("Admins only: this page needs an admin token.")
        st.stop()
    return user


def login_form() -> None:
    """The login page: a password field for the access token; nothing else is shown before login."""
    st.title("Debate judging")
    message = st.session_state.pop("auth_error", None)
    if message:
        st.error(message)
    with st.form("login", clear_on_submit=True):
        token = st.text_input("Access token", type="password", key="login_token",
                              help="The token you were given. Never put it in a link.")
        submitted = st.form_submit_button("Log in", key="login_submit")
    if submitted:
        token = (token or "").strip()
        if get_queue().login(token) is None:
            st.error("That access token is wrong or has been revoked.")
            return
        st.session_state["token"] = token
        st.rerun()


def build_pages(user: Optional[JudgeAccount]) -> list:
    """The pages this user's role may open, and no others: their titles and paths are sent to the browser
    (hidden entries too), so a visitor's list holds the login page only and a judge's the judging page."""
    if user is None:
        return [st.Page(login_form, title="Log in", url_path="login", default=True)]
    from ui import admin_pages, judge_page

    pages = [st.Page(judge_page.judge_page, title="Judge", icon="⚖️", url_path="judge", default=True,
                     visibility="hidden" if user.admin else "visible")]
    if user.admin:
        pages += [st.Page(func, title=title, url_path=url) for func, title, url in admin_pages.PAGES]
    return pages


def main() -> None:
    """Route one rerun: refuse tokens in the address, log in, then run the chosen page."""
    st.set_page_config(page_title="Debate judging", page_icon="⚖️")
    if "token" in st.query_params:
        st.query_params.clear()  # drop it from the address bar; it is never read
        st.error("Access tokens are never accepted in the address. Open the page without it and type "
                 "your token into the login field.")
        st.stop()
    with shown_or_logged("this page"):
        user = current_user()
        page = st.navigation(build_pages(user), position="sidebar" if user else "hidden")
        if user is not None:
            with st.sidebar:
                st.caption(f"Logged in as {user.name}" + (" (admin)" if user.admin else ""))
                if st.button("Log out", key="logout"):
                    logout()
                    st.rerun()
        page.run()


if __name__ == "__main__":
    # Streamlit runs this file as __main__; run the imported module's copy so that the pages and the
    # entry point share one set of cached resources.
    from ui import app as _app

    _app.main()
