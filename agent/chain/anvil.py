"""A local anvil chain as a context manager, for ``scripts/demo`` and the tests.

    with AnvilProcess() as anvil:          # starts anvil on 127.0.0.1 and a free port, waits for it
        client = ChainClient(anvil.rpc_url, anvil.dev_keys[0])
        anvil.stop(); time.sleep(30); anvil.start()   # the chain goes away and comes back, state kept

The binary comes from npm (``@foundry-rs/anvil``): the platform package's ``bin/anvil`` under the
repository's ``node_modules`` is preferred over the ``node_modules/.bin/anvil`` node wrapper, so that
stopping the process stops the chain. ``HYPERGPU_ANVIL`` names another binary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from agent.errors import UserFacingError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's well-known development mnemonic: its accounts hold test ether on a local chain only."""


class AnvilNotFoundError(UserFacingError):
    """No anvil binary was found."""

    exit_code = 3


def find_anvil(root: Path = REPO_ROOT) -> Path | None:
    """The anvil binary to run, or ``None``: ``$HYPERGPU_ANVIL``, the npm platform binary, the npm
    wrapper, then ``anvil`` on ``PATH``."""
    override = os.environ.get("HYPERGPU_ANVIL")
    if override:
        return Path(override) if Path(override).is_file() else None
    modules = root / "node_modules" / "@foundry-rs"
    candidates = [*sorted(modules.glob("anvil-*/bin/anvil")), root / "node_modules" / ".bin" / "anvil"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dev_private_keys(count: int, mnemonic: str = DEFAULT_MNEMONIC) -> list[str]:
    """The private keys (``0x`` hex) of the first ``count`` accounts anvil funds from ``mnemonic``."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}").key.to_0x_hex()
        for index in range(count)
    ]


class AnvilProcess:
    """An anvil chain on ``127.0.0.1``, started by :meth:`start` (or ``with``) and stopped by :meth:`stop`.

    Parameters:
        port: TCP port; ``None`` picks a free one, kept across :meth:`stop` / :meth:`start`.
        accounts: how many funded development accounts anvil creates (see :attr:`dev_keys`).
        balance_ether: each development account's balance, in ether.
        chain_id: the chain id anvil reports (31337 = HyperGPU's ``local`` network).
        block_time: seconds between blocks; ``None`` mines one block per transaction at once.
        state_path: file where the chain is saved on stop and loaded on start; ``None`` uses a
            temporary file, so :meth:`restart` keeps the state either way.
        startup_timeout: seconds to wait for anvil to answer before giving up.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        accounts: int = 10,
        balance_ether: int = 10_000,
        chain_id: int = 31337,
        block_time: float | None = None,
        state_path: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.accounts = accounts
        self.balance_ether = balance_ether
        self.chain_id = chain_id
        self.block_time = block_time
        self.startup_timeout = startup_timeout
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if state_path is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="hypergpu-anvil-")
            state_path = Path(self._tempdir.name) / "state.json"
        self.state_path = state_path
        self._process: subprocess.Popen[bytes] | None = None
        self._dev_keys: list[str] | None = None

    @property
    def rpc_url(self) -> str:
        """The HTTP JSON-RPC URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def dev_keys(self) -> list[str]:
        """Private keys of the funded development accounts (test ether only; never use them elsewhere)."""
        if self._dev_keys is None:
            self._dev_keys = dev_private_keys(self.accounts)
        return self._dev_keys

    @property
    def running(self) -> bool:
        """Whether the anvil process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> AnvilProcess:
        """Start anvil (loading :attr:`state_path` if it exists) and wait until it answers."""
        if self.running:
            return self
        binary = find_anvil()
        if binary is None:
            raise AnvilNotFoundError(
                "anvil is not installed; run scripts/setup (npm ci installs @foundry-rs/anvil) "
                "or set HYPERGPU_ANVIL to an anvil binary"
            )
        command = [
            str(binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            str(self.accounts),
            "--balance",
            str(self.balance_ether),
            "--state",
            str(self.state_path),
            "--silent",
        ]
        if self.block_time is not None:
            command += ["--block-time", str(self.block_time)]
        # A session of its own, so that stopping it also stops the node wrapper's child when the
        # wrapper is what was found.
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"anvil exited with code {self._process.returncode}: {stderr.strip()}")
            try:
                if self.rpc("eth_chainId") is not None:
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.rpc_url} within {self.startup_timeout} s")

    def rpc(self, method: str, params: list[object] | None = None) -> object:
        """Call one JSON-RPC ``method`` on this anvil (e.g. ``evm_setAutomine``) and return its result."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        request = urllib.request.Request(
            self.rpc_url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            reply = json.loads(response.read())
        if "error" in reply:
            raise RuntimeError(f"anvil {method}: {reply['error']}")
        return reply.get("result")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop anvil gracefully, so that it writes its state to :attr:`state_path`; kill it if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr:
            process.stderr.close()

    def restart(self) -> AnvilProcess:
        """Stop and start again on the same port with the same chain state."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop anvil and delete the temporary state file, if one was made."""
        self.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> AnvilProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
