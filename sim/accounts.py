"""Who simulated users are: accounts of their own (sim-1, sim-2, ...), never a real user's.

A simulation chats as a browser does, so each of its conversations lands in the history of the
user it logs in as: it must not be a person's account (`admin` used to be the default, which
flooded the operator's history with hundreds of simulated chats). `chatbot up` creates the
simulated users next to `admin` when it generates the users (no AUTH_USERS), with one password
shared by all of them, kept in DATA_DIR/secrets/sim-password; `chatbot simulate` logs in as them.
With AUTH_USERS set, add them there (`sim-1:<password>,...`) or pass `--users`.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "sim-"
COUNT = 4  # simulated users `chatbot up` creates: conversations take turns between them


def names(count: int = COUNT) -> list[str]:
    """sim-1 ... sim-<count>: valid user names (feedback.keys.valid_user)."""
    return [f"{PREFIX}{i}" for i in range(1, count + 1)]


def is_simulated(user: str) -> bool:
    return user.startswith(PREFIX)


def auth_users_entries(password: str, count: int = COUNT) -> str:
    """What `chatbot up` adds to the AUTH_USERS it generates: "sim-1:<pw>,sim-2:<pw>,..."."""
    return ",".join(f"{name}:{password}" for name in names(count))


def find(configured: dict[str, str], password_file: Path) -> dict[str, str]:
    """The simulated users to log in as: those of AUTH_USERS (configured), else the ones `chatbot
    up` generated (their shared password in `password_file`: DataLayout.sim_password); {} when there are none."""
    mine = {user: password for user, password in configured.items() if is_simulated(user)}
    if mine:
        return mine
    if configured:
        return {}  # AUTH_USERS names the users: `chatbot up` generated none
    if not password_file.is_file():
        return {}
    password = password_file.read_text().strip()
    return dict.fromkeys(names(), password) if password else {}
