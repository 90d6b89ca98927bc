"""The agent's wallet: one private key in an encrypted keystore file (Web3 Secret Storage, scrypt).

    path = keystore_path(None)                      # --keystore, else $HYPERGPU_KEYSTORE, else the default
    address = create_wallet(path, password)         # file mode 0600, folder 0700
    account = unlock_wallet(path, password)         # eth-account LocalAccount, for ChainClient

The default file is ``$XDG_CONFIG_HOME/hypergpu/wallet.json`` (``~/.config/hypergpu/wallet.json``).
Passwords come from ``--password-file``, then ``$HYPERGPU_WALLET_PASSWORD``, then a hidden prompt
(:func:`read_password`). Neither the key nor the password is ever logged, printed or put in an
exception message; the address (public) is.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from agent.errors import UserFacingError

KEYSTORE_ENV = "HYPERGPU_KEYSTORE"
PASSWORD_ENV = "HYPERGPU_WALLET_PASSWORD"
DEFAULT_SCRYPT_N = 2**18
"""scrypt cost of new keystores: geth's standard (about 1 s and 256 MiB to unlock)."""


class WalletError(UserFacingError):
    """A wallet problem the user can fix (missing file, wrong password, bad key)."""

    exit_code = 2


def default_keystore_path() -> Path:
    """``$HYPERGPU_KEYSTORE`` if set, else ``$XDG_CONFIG_HOME/hypergpu/wallet.json`` (``~/.config/...``)."""
    override = os.environ.get(KEYSTORE_ENV)
    if override:
        return Path(override).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "hypergpu" / "wallet.json"


def keystore_path(flag: Path | None) -> Path:
    """The keystore to use: the ``--keystore`` flag if given, else :func:`default_keystore_path`."""
    return flag.expanduser() if flag is not None else default_keystore_path()


def read_password(
    password_file: Path | None, *, confirm: bool = False, interactive: bool | None = None
) -> str:
    """The wallet password: from ``password_file`` (first line), ``$HYPERGPU_WALLET_PASSWORD``, or a hidden
    prompt (asked twice when ``confirm``). ``interactive=None`` prompts only when stdin is a terminal.

    Raises :class:`WalletError` when no source gives one.
    """
    if password_file is not None:
        try:
            lines = password_file.expanduser().read_text().splitlines()
        except OSError as exc:
            raise WalletError(f"cannot read the password file {password_file}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise WalletError(
                f"the password file {password_file} is empty; put the password on its first line"
            )
        return lines[0]
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise WalletError(
            f"no wallet password: pass --password-file FILE, set {PASSWORD_ENV}, or run in a terminal"
        )
    import typer

    password = typer.prompt("Wallet password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        raise WalletError("the wallet password must not be empty")
    return str(password)


def _parse_private_key(private_key: str) -> LocalAccount:
    text = private_key.strip()
    hex_part = text.removeprefix("0x").removeprefix("0X")
    if len(hex_part) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hex_part):
        raise WalletError("that is not a private key: give 64 hex characters, with or without 0x")
    try:
        return Account.from_key("0x" + hex_part)
    except Exception:  # eth-keys rejects 0 and values >= the curve order; the message would echo the key
        raise WalletError("that private key is outside the valid range for secp256k1") from None


def _write_keystore(path: Path, keystore: dict[str, object]) -> None:
    if path.exists():
        raise WalletError(f"a wallet already exists at {path}; keep it, or give another --keystore path")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(keystore, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # in case a umask or an ACL widened it
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _save(account: LocalAccount, path: Path, password: str, scrypt_n: int) -> str:
    if not password:
        raise WalletError("the wallet password must not be empty")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise WalletError(f"scrypt cost {scrypt_n} must be a power of two (default {DEFAULT_SCRYPT_N})")
    keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=scrypt_n)
    _write_keystore(path, keystore)
    return account.address


def create_wallet(path: Path, password: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> str:
    """Make a new random key, save it encrypted at ``path`` (mode 0600) and return its address.

    ``scrypt_n`` is the scrypt cost (a power of two); lower unlocks faster and resists guessing less.
    Refuses to overwrite an existing keystore.
    """
    return _save(Account.create(), path, password, scrypt_n)


def import_wallet(path: Path, private_key: str, password: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> str:
    """Save an existing ``private_key`` (64 hex characters) encrypted at ``path``; return its address."""
    return _save(_parse_private_key(private_key), path, password, scrypt_n)


def _load(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise WalletError(f"no wallet at {path}; create one with `hypergpu wallet new` or import a key")
    try:
        keystore = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WalletError(f"{path} is not a readable keystore file ({type(exc).__name__})") from None
    if not isinstance(keystore, dict) or ("crypto" not in keystore and "Crypto" not in keystore):
        raise WalletError(f"{path} is not a Web3 Secret Storage keystore (no 'crypto' section)")
    return keystore


def check_permissions(path: Path) -> None:
    """Refuse a keystore that other users can read or write (like ssh does with keys)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WalletError(f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")


def keystore_address(path: Path) -> str | None:
    """The address recorded in clear in the keystore (the standard allows it), or ``None`` if absent.

    Needs no password; raises :class:`WalletError` when there is no keystore at ``path``.
    """
    keystore = _load(path)
    address = keystore.get("address")
    if not isinstance(address, str):
        return None
    return to_checksum_address(address if address.startswith("0x") else "0x" + address)


def unlock_wallet(path: Path, password: str) -> LocalAccount:
    """Decrypt the keystore at ``path``. Raises :class:`WalletError` for a wrong password (one line)."""
    keystore = _load(path)
    check_permissions(path)
    try:
        private_key = Account.decrypt(keystore, password)
    except ValueError:
        raise WalletError(f"wrong password for the wallet at {path}") from None
    return Account.from_key(private_key)
