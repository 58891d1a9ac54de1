"""``g2is app``: start the Streamlit app (local-only unless --host says otherwise)."""
from __future__ import annotations

import os
import sys

from ..workspace import PROJECT_ROOT

LOCAL = "127.0.0.1"

COMMANDS = {"app": "start G2IS Studio (the Streamlit app) on http://127.0.0.1:PORT"}


def register(sub) -> None:
    p = sub.add_parser("app", help=COMMANDS["app"])
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    p.add_argument("--host", default=None, metavar="ADDRESS",
                   help="listen on ADDRESS instead of 127.0.0.1 (e.g. 0.0.0.0): anyone who can reach it can "
                        "read the workspace and start jobs; the app has no login")
    p.set_defaults(func=run_app)


def app_command(port: int = 8501, host: str | None = None) -> list[str]:
    """The streamlit command line for the app (address, port and headless mode spelled out)."""
    return [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"),
            "--server.address", host or LOCAL, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.showErrorDetails", "none"]


def run_app(args) -> int:
    if not (1 <= args.port <= 65535):
        raise ValueError(f"port {args.port} is not between 1 and 65535")
    host = args.host or LOCAL
    if host not in (LOCAL, "localhost", "::1"):
        print(f"g2is app: WARNING: listening on {host}: anyone who can reach this address can read your "
              "workspace, upload files and start jobs on this machine. The app has no login; use it only on a "
              "network you trust (or an SSH tunnel to 127.0.0.1 instead).", file=sys.stderr)
    shown = "localhost" if host == LOCAL else host
    print(f"G2IS Studio on http://{shown}:{args.port}  (Ctrl+C to stop)", flush=True)
    # Replace this process with streamlit: signals (Ctrl+C, a service manager's SIGTERM) reach the
    # server itself and no orphan is left behind. Streamlit reads .streamlit/config.toml from the
    # working directory, hence the chdir to the project.
    cmd = app_command(args.port, host)
    os.chdir(PROJECT_ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
    return 0  # not reached
