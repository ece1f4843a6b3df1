"""A private tmux server (its own socket, no user configuration) to run ``memscope-otel top`` in a
real terminal and read the screen back with ``capture-pane``."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time

from integration.conftest import unavailable


def tmux_binary() -> str:
    """The tmux executable; skips the test (fails under MEMSCOPE_REQUIRE_INTEGRATION=1) without it."""
    path = os.environ.get("MEMSCOPE_TMUX_BIN") or shutil.which("tmux")
    if not path:
        unavailable("tmux is not installed (Debian package tmux; scripts/install_ci_packages.sh installs it)")
    return path


class TmuxPane:
    """One detached session of a fixed size running ``argv`` in ``cwd``; its exit status is written
    to a file when it ends, and the pane stays until the server is killed."""

    def __init__(self, argv, cwd, env, width=160, height=48):
        self.tmux = tmux_binary()
        self.dir = tempfile.mkdtemp(prefix="ms-tmux-")  # short: a socket path has a length limit
        self.socket = os.path.join(self.dir, "sock")
        self.status_file = os.path.join(self.dir, "status")
        self.stderr_file = os.path.join(self.dir, "stderr")
        # The shell traps SIGINT with a handler (not ignores it: an ignored signal stays ignored in
        # its child), so that a Ctrl-C sent to the pane reaches the command and the shell lives on
        # to write the command's status.
        script = (f"trap : INT; {shlex.join(argv)} 2>{shlex.quote(self.stderr_file)}; "
                  f"echo $? > {shlex.quote(self.status_file)}; sleep 600")
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(cwd),
                   "sh", "-c", script, env=env)

    def _tmux(self, *args, env=None):
        return subprocess.run([self.tmux, "-S", self.socket, *args], check=True, capture_output=True, text=True,
                              env=env, timeout=30)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p").stdout

    def wait_for_screen(self, predicate, timeout=60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.25)
        raise AssertionError(f"the screen never showed what was expected in {timeout} s:\n{screen}\n"
                             f"stderr: {self.stderr()}")

    def send_keys(self, *keys):
        self._tmux("send-keys", *keys)

    def wait_for_status(self, timeout=20.0):
        """The command's exit status once it ended, or None if it still runs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.status_file) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        return None

    def stderr(self) -> str:
        try:
            with open(self.stderr_file) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def close(self):
        subprocess.run([self.tmux, "-S", self.socket, "kill-server"], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
