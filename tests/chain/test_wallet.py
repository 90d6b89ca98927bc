"""The encrypted keystore: file mode, password sources, clear errors, and no secret in any log."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from eth_account import Account

from agent.chain.wallet import (
    WalletError,
    create_wallet,
    default_keystore_path,
    import_wallet,
    keystore_address,
    keystore_path,
    read_password,
    unlock_wallet,
)

FAST_SCRYPT = 2**12  # tests only: the default 2**18 takes about a second per unlock
PASSWORD = "correct horse battery staple"


def test_new_wallet_is_encrypted_private_and_unlocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "cfg" / "hypergpu" / "wallet.json"
    address = create_wallet(path, PASSWORD, scrypt_n=FAST_SCRYPT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    keystore = json.loads(path.read_text())
    assert keystore["crypto"]["kdf"] == "scrypt" and keystore["crypto"]["kdfparams"]["n"] == FAST_SCRYPT
    assert keystore_address(path) == address
    account = unlock_wallet(path, PASSWORD)
    assert account.address == address
    key_hex = account.key.hex()
    assert key_hex not in path.read_text() and PASSWORD not in path.read_text()
    assert key_hex not in caplog.text and PASSWORD not in caplog.text
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left nothing behind


def test_wrong_password_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    create_wallet(path, PASSWORD, scrypt_n=FAST_SCRYPT)
    with pytest.raises(WalletError) as error:
        unlock_wallet(path, "not it")
    assert str(error.value) == f"wrong password for the wallet at {path}"
    assert "not it" not in str(error.value)


def test_missing_existing_and_world_readable_keystores_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    with pytest.raises(WalletError, match=r"no wallet at .*hypergpu wallet new"):
        unlock_wallet(path, PASSWORD)
    create_wallet(path, PASSWORD, scrypt_n=FAST_SCRYPT)
    with pytest.raises(WalletError, match="already exists"):
        create_wallet(path, PASSWORD, scrypt_n=FAST_SCRYPT)
    os.chmod(path, 0o644)
    with pytest.raises(WalletError, match="chmod 600"):
        unlock_wallet(path, PASSWORD)
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(WalletError, match="not a readable keystore"):
        unlock_wallet(tmp_path / "junk.json", PASSWORD)


def test_import_keeps_the_address_and_rejects_bad_keys_without_echoing_them(tmp_path: Path) -> None:
    account = Account.create()
    address = import_wallet(tmp_path / "w.json", account.key.hex(), PASSWORD, scrypt_n=FAST_SCRYPT)
    assert address == account.address
    assert unlock_wallet(tmp_path / "w.json", PASSWORD).key == account.key
    for bad in ("0x1234", "zz" * 32, "0x" + "00" * 32):
        with pytest.raises(WalletError) as error:
            import_wallet(tmp_path / f"bad{len(bad)}.json", bad, PASSWORD, scrypt_n=FAST_SCRYPT)
        assert bad.removeprefix("0x") not in str(error.value)
    with pytest.raises(WalletError, match="must not be empty"):
        import_wallet(tmp_path / "empty-pw.json", account.key.hex(), "", scrypt_n=FAST_SCRYPT)
    with pytest.raises(WalletError, match="power of two"):
        create_wallet(tmp_path / "n.json", PASSWORD, scrypt_n=1000)


def test_password_sources_file_then_env_then_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("from-file\nignored second line\n")
    monkeypatch.setenv("HYPERGPU_WALLET_PASSWORD", "from-env")
    assert read_password(password_file) == "from-file"
    assert read_password(None) == "from-env"
    monkeypatch.delenv("HYPERGPU_WALLET_PASSWORD")
    with pytest.raises(WalletError, match="--password-file"):
        read_password(None, interactive=False)
    monkeypatch.setattr("typer.prompt", lambda *args, **kwargs: "typed")
    assert read_password(None, interactive=True) == "typed"
    (tmp_path / "empty").write_text("")
    with pytest.raises(WalletError, match="empty"):
        read_password(tmp_path / "empty")
    with pytest.raises(WalletError, match="cannot read"):
        read_password(tmp_path / "absent")


def test_keystore_location_flag_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYPERGPU_KEYSTORE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_keystore_path() == tmp_path / "xdg" / "hypergpu" / "wallet.json"
    monkeypatch.setenv("HYPERGPU_KEYSTORE", str(tmp_path / "env.json"))
    assert keystore_path(None) == tmp_path / "env.json"
    assert keystore_path(tmp_path / "flag.json") == tmp_path / "flag.json"
