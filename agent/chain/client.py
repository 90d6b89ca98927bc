"""``ChainClient``: the one way HyperGPU talks to an EVM chain (web3.py), tuned for Monad.

    client = ChainClient(rpc_url, account)              # account: eth-account LocalAccount or hex key
    registry = client.contract("TrainingRegistry", address)
    result = client.write(registry, "createRun", [run_id, ...], value=pool_wei)   # -> TxResult
    logs = client.get_logs(registry.events.NodeRegistered, from_block=deployment.block)

What it does that plain web3 does not:

- **Gas limit = estimate * (1 + margin)**, set on every transaction. Monad charges gas on the LIMIT, so
  web3's ``BufferedGasEstimateMiddleware`` (which adds 100,000 gas when ``gas`` is missing) is removed.
- **EIP-1559 fees**: ``maxFeePerGas = 2 * baseFee + tip``, ``maxPriorityFeePerGas = tip`` (the node's
  ``eth_maxPriorityFeePerGas``).
- **A local nonce counter**, read from the chain on first use and again after ``nonce too low`` or
  when a broadcast fails in an unknown way, so concurrent writers from one process never collide.
- **Retries with exponential backoff** (tenacity) on connection errors, timeouts, HTTP 429 and 5xx.
  web3's own provider retry is switched off so that there is one policy, configured here.
- **Receipts awaited with a timeout**, reverts raised as :class:`TransactionRevertedError` with the
  decoded custom error.
- **Event reads in block ranges** of at most ``log_block_range`` blocks (Monad caps ``eth_getLogs``).

Signing and broadcasting are separate (:meth:`sign` then :meth:`broadcast`) so that the durable outbox
can record a transaction's hash before it leaves the process. The private key is held by the
eth-account object only and is never logged or put in an exception.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError

from agent.chain.artifacts import describe_revert, load_abi
from agent.chain.networks import ChainConfig, explorer_link
from agent.errors import ConfigError, UserFacingError

log = logging.getLogger("hypergpu.chain")

T = TypeVar("T")

MARGIN_BASIS_POINTS = 10_000


class ChainUnreachableError(UserFacingError):
    """The RPC endpoint did not answer after all retries."""

    exit_code = 3


class TransactionRevertedError(UserFacingError):
    """A transaction (or its gas estimate) reverted; ``reason`` is the decoded error, ``tx_hash`` or None."""

    exit_code = 1

    def __init__(self, action: str, reason: str, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"{action} was rejected by the contract: {reason}{where}")


class ReceiptTimeoutError(TimeoutError):
    """No receipt for ``tx_hash`` arrived within the timeout; the transaction may still be mined later."""

    def __init__(self, tx_hash: str, timeout: float) -> None:
        self.tx_hash = tx_hash
        super().__init__(f"no receipt for {tx_hash} within {timeout:.0f} s")


class NonceConsumedError(RuntimeError):
    """A signed transaction's nonce was used by another transaction: it can never be mined; sign anew."""


@dataclass(frozen=True)
class SignedTransaction:
    """A transaction signed but maybe not yet broadcast. ``raw`` can be re-broadcast as is (same hash)."""

    tx_hash: str
    raw: bytes
    nonce: int
    gas_limit: int
    gas_estimate: int
    to: str | None  # None: contract creation
    value: int


@dataclass(frozen=True)
class TxResult:
    """A mined transaction. Gas in gas units, ``effective_gas_price`` in wei per gas."""

    tx_hash: str
    block_number: int
    status: bool
    gas_used: int
    effective_gas_price: int
    logs: tuple[Any, ...]
    contract_address: str | None = None  # set when the transaction created a contract

    @property
    def fee_wei(self) -> int:
        """What the sender paid on a chain that charges gas used (anvil, Ethereum)."""
        return self.gas_used * self.effective_gas_price


def _is_transient(error: BaseException) -> bool:
    """Connection problems, timeouts, rate limits and server errors: worth retrying."""
    if isinstance(error, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return True
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return error.response.status_code == 429 or error.response.status_code >= 500
    return False


def _error_text(error: BaseException) -> str:
    if isinstance(error, Web3RPCError) and isinstance(error.rpc_response, dict):
        message = error.rpc_response.get("error", {}).get("message")
        if message:
            return str(message).lower()
    return str(error).lower()


def margin_gas_limit(estimate: int, margin: float) -> int:
    """``estimate * (1 + margin)``, rounded up, computed in integer basis points (no float drift)."""
    basis_points = round(margin * MARGIN_BASIS_POINTS)
    return estimate + -(-estimate * basis_points // MARGIN_BASIS_POINTS)


class ChainClient:
    """A web3.py connection plus (optionally) the account that signs.

    Parameters:
        rpc_url: HTTP JSON-RPC endpoint.
        account: an eth-account ``LocalAccount``, a ``0x`` private key, or ``None`` for read-only use.
        expected_chain_id: refuse to work (``ConfigError``) if the node reports another chain id.
        gas_margin: gas limit = estimate * (1 + gas_margin); 0.10 = 10 %.
        receipt_timeout: default seconds :meth:`wait_for_receipt` waits.
        log_block_range: most blocks per ``eth_getLogs`` request.
        rpc_retries: retries of a transient RPC failure (so ``rpc_retries + 1`` attempts in all).
        retry_base_delay: first backoff delay in seconds; doubles per retry, capped at ``retry_max_delay``.
        request_timeout: seconds per HTTP request.
        poll_interval: seconds between receipt polls.
    """

    def __init__(
        self,
        rpc_url: str,
        account: LocalAccount | str | None = None,
        *,
        expected_chain_id: int | None = None,
        gas_margin: float = 0.10,
        receipt_timeout: float = 60.0,
        log_block_range: int = 1000,
        rpc_retries: int = 5,
        retry_base_delay: float = 0.25,
        retry_max_delay: float = 8.0,
        request_timeout: float = 10.0,
        poll_interval: float = 0.1,
    ) -> None:
        self.rpc_url = rpc_url
        provider = HTTPProvider(
            rpc_url, request_kwargs={"timeout": request_timeout}, exception_retry_configuration=None
        )
        self.w3 = Web3(provider)
        # Monad bills the gas limit: never let web3 pad it by 100,000; this client sets `gas` itself.
        self.w3.middleware_onion.remove("gas_estimate")
        self.account: LocalAccount | None = (
            Account.from_key(account) if isinstance(account, str | bytes) else account
        )
        self.expected_chain_id = expected_chain_id
        self.gas_margin = gas_margin
        self.receipt_timeout = receipt_timeout
        self.log_block_range = log_block_range
        self.rpc_retries = rpc_retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.poll_interval = poll_interval
        # Re-entrant: taking a nonce may reconcile it, and both hold the lock across the RPC so that two
        # threads never read the same pending count. The send lock keeps broadcasts in nonce order.
        self._nonce_lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None

    @classmethod
    def from_config(cls, config: ChainConfig, account: LocalAccount | str | None = None) -> ChainClient:
        """A client for the ``[chain]`` section: its RPC URL, its network's chain id, its gas margin."""
        return cls(
            config.effective_rpc_url,
            account,
            expected_chain_id=config.network_info.chain_id,
            gas_margin=config.gas_margin,
            receipt_timeout=config.receipt_timeout,
            log_block_range=config.log_block_range,
            rpc_retries=config.rpc_retries,
        )

    def __repr__(self) -> str:  # never show the key
        return f"ChainClient({self.rpc_url!r}, address={self.address!r})"

    # ---- plumbing ------------------------------------------------------------------------------------

    def retrying(self, operation: Callable[[], T], what: str) -> T:
        """Run ``operation``, retrying transient RPC failures with exponential backoff.

        Raises :class:`ChainUnreachableError` (one clear line) when every attempt failed.
        """

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            # INFO, not WARNING: a retry that succeeds is routine, and one that fails raises one clear error.
            log.info(
                "%s: RPC %s failed (%s); retry %d/%d",
                what,
                self.rpc_url,
                type(error).__name__,
                state.attempt_number,
                self.rpc_retries,
            )

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.rpc_retries + 1),
            wait=wait_exponential(multiplier=self.retry_base_delay, max=self.retry_max_delay),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(operation)
        except Exception as error:
            if _is_transient(error):
                raise ChainUnreachableError(
                    f"cannot reach the chain RPC at {self.rpc_url} ({type(error).__name__}); check that the "
                    "node is up and chain.rpc_url / HYPERGPU_CHAIN__RPC_URL points at it"
                ) from error
            raise

    @property
    def address(self) -> str | None:
        """The signing account's checksummed address, or ``None`` for a read-only client."""
        return self.account.address if self.account else None

    def _require_account(self) -> LocalAccount:
        if self.account is None:
            raise ConfigError("this chain client has no wallet; load one with `hypergpu wallet` first")
        return self.account

    @property
    def chain_id(self) -> int:
        """The node's chain id (checked against ``expected_chain_id`` the first time)."""
        if self._chain_id is None:
            chain_id = int(self.retrying(lambda: self.w3.eth.chain_id, "eth_chainId"))
            if self.expected_chain_id is not None and chain_id != self.expected_chain_id:
                raise ConfigError(
                    f"the RPC at {self.rpc_url} serves chain id {chain_id}, but the configured network "
                    f"has chain id {self.expected_chain_id}; fix chain.network or chain.rpc_url"
                )
            self._chain_id = chain_id
        return self._chain_id

    def contract(self, name: str, address: str) -> type[Contract] | Contract:
        """A web3 contract object for the shipped artifact ``name`` at ``address``."""
        return self.w3.eth.contract(address=to_checksum_address(address), abi=load_abi(name))

    def explorer_link(self, tx_hash: str) -> str | None:
        """The explorer page of ``tx_hash`` on this chain, or ``None`` (local chains have none)."""
        return explorer_link(self.chain_id, tx_hash)

    # ---- reads ---------------------------------------------------------------------------------------

    def balance(self, address: str) -> int:
        """Native balance of ``address`` in wei."""
        return int(self.retrying(lambda: self.w3.eth.get_balance(to_checksum_address(address)), "balance"))

    def block_number(self) -> int:
        """The latest block number."""
        return int(self.retrying(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    def call(self, contract: Any, function: str, args: Sequence[Any] = ()) -> Any:
        """``eth_call`` of ``contract.function(*args)``; a revert raises TransactionRevertedError."""
        bound = contract.get_function_by_name(function)(*args)
        try:
            return self.retrying(bound.call, f"call {function}")
        except (ContractCustomError, ContractLogicError) as error:
            raise TransactionRevertedError(f"{function}()", describe_revert(error.data)) from None

    def get_logs(
        self,
        event: Any,
        from_block: int,
        to_block: int | None = None,
        argument_filters: dict[str, Any] | None = None,
    ) -> list[Any]:
        """Every ``event`` log (e.g. ``registry.events.NodeRegistered``) in ``[from_block, to_block]``.

        Reads ``log_block_range`` blocks per request; ``to_block=None`` means the latest block.
        """
        last = self.block_number() if to_block is None else to_block
        found: list[Any] = []
        start = from_block
        while start <= last:
            end = min(start + self.log_block_range - 1, last)
            chunk = self.retrying(
                lambda s=start, e=end: event.get_logs(
                    from_block=s, to_block=e, argument_filters=argument_filters
                ),
                "eth_getLogs",
            )
            found.extend(chunk)
            start = end + 1
        return found

    def receipt(self, tx_hash: str) -> TxResult | None:
        """The receipt of ``tx_hash`` if it is mined, else ``None``."""

        def fetch() -> Any:
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None

        receipt = self.retrying(fetch, "eth_getTransactionReceipt")
        if receipt is None:
            return None
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            status=bool(receipt["status"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
            logs=tuple(receipt["logs"]),
            contract_address=receipt.get("contractAddress"),
        )

    def transaction_known(self, tx_hash: str) -> bool:
        """Whether the node knows ``tx_hash`` (mined or waiting in its pool)."""

        def fetch() -> bool:
            try:
                return self.w3.eth.get_transaction(HexBytes(tx_hash)) is not None
            except TransactionNotFound:
                return False

        return bool(self.retrying(fetch, "eth_getTransactionByHash"))

    def wait_for_receipt(self, tx_hash: str, timeout: float | None = None) -> TxResult:
        """Poll until ``tx_hash`` is mined; raise :class:`ReceiptTimeoutError` after ``timeout`` seconds.

        Connection failures while polling count against the timeout, not as errors.
        """
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.receipt(tx_hash)
                if result is not None:
                    return result
            except ChainUnreachableError:
                log.warning("waiting for %s: RPC unreachable, still waiting", tx_hash)
            if time.monotonic() >= deadline:
                raise ReceiptTimeoutError(tx_hash, timeout)
            time.sleep(self.poll_interval)

    # ---- writes --------------------------------------------------------------------------------------

    def calldata(self, contract: Any, function: str, args: Sequence[Any] = ()) -> tuple[str, bytes]:
        """``(to, data)`` of a call to ``contract.function(*args)``, e.g. for :class:`Outbox.enqueue`."""
        data = contract.encode_abi(function, args=list(args))
        return contract.address, bytes(HexBytes(data))

    def estimate_gas_limit(self, to: str | None, data: bytes = b"", value: int = 0) -> tuple[int, int]:
        """``(estimate, limit)`` for a transaction from this account; ``limit = estimate * (1 + margin)``.

        ``to=None`` estimates a contract creation with ``data`` as init code.

        A revert during estimation raises :class:`TransactionRevertedError` with the decoded reason.
        """
        account = self._require_account()
        request: dict[str, Any] = {"from": account.address, "data": data, "value": value}
        if to is not None:
            request["to"] = to_checksum_address(to)
        try:
            estimate = int(self.retrying(lambda: self.w3.eth.estimate_gas(request), "eth_estimateGas"))
        except (ContractCustomError, ContractLogicError) as error:
            what = f"transaction to {to}" if to else "contract creation"
            raise TransactionRevertedError(what, describe_revert(error.data)) from None
        return estimate, margin_gas_limit(estimate, self.gas_margin)

    def fees(self) -> tuple[int, int]:
        """``(maxFeePerGas, maxPriorityFeePerGas)`` in wei: ``2 * baseFee + tip`` and the node's tip."""
        block = self.retrying(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base_fee = int(block.get("baseFeePerGas", 0))
        tip = int(self.retrying(lambda: self.w3.eth.max_priority_fee, "eth_maxPriorityFeePerGas"))
        return 2 * base_fee + tip, tip

    def reconcile_nonce(self) -> int:
        """Re-read the account's next nonce from the chain (pending block) and use it from now on."""
        account = self._require_account()
        with self._nonce_lock:
            nonce = int(
                self.retrying(
                    lambda: self.w3.eth.get_transaction_count(account.address, "pending"),
                    "eth_getTransactionCount",
                )
            )
            self._next_nonce = nonce
        log.info("nonce of %s reconciled with the chain: next is %d", account.address, nonce)
        return nonce

    def _take_nonce(self) -> int:
        with self._nonce_lock:
            if self._next_nonce is None:
                self.reconcile_nonce()
            assert self._next_nonce is not None
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    def _forget_nonce(self) -> None:
        with self._nonce_lock:
            self._next_nonce = None

    def _nonce_used(self, nonce: int) -> None:
        with self._nonce_lock:
            if self._next_nonce is None or self._next_nonce <= nonce:
                self._next_nonce = nonce + 1

    def sign(self, to: str | None, data: bytes = b"", value: int = 0) -> SignedTransaction:
        """Estimate gas, price it (EIP-1559), take the next local nonce and sign. Nothing is sent.

        ``to=None`` signs a contract creation with ``data`` as init code.
        """
        account = self._require_account()
        estimate, gas_limit = self.estimate_gas_limit(to, data, value)
        max_fee, tip = self.fees()
        nonce = self._take_nonce()
        checksummed = to_checksum_address(to) if to is not None else None
        transaction: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "value": value,
            "data": data,
            "gas": gas_limit,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        if checksummed is not None:
            transaction["to"] = checksummed
        signed = account.sign_transaction(transaction)
        return SignedTransaction(
            tx_hash=HexBytes(signed.hash).to_0x_hex(),
            raw=bytes(signed.raw_transaction),
            nonce=nonce,
            gas_limit=gas_limit,
            gas_estimate=estimate,
            to=checksummed,
            value=value,
        )

    def broadcast(self, signed: SignedTransaction) -> str:
        """Send ``signed`` (again, if it was sent before: same bytes, same hash). Returns the hash.

        A node that already has it is a success. ``nonce too low`` is a success when the
        transaction itself is mined, else :class:`NonceConsumedError` (another transaction took the
        nonce; sign anew).
        """
        try:
            self.retrying(lambda: self.w3.eth.send_raw_transaction(signed.raw), "eth_sendRawTransaction")
        except Web3RPCError as error:
            text = _error_text(error)
            if "already known" in text or "already imported" in text or "already exists" in text:
                pass
            elif "nonce too low" in text or "nonce has already been used" in text:
                self._forget_nonce()  # re-read before the next signature
                if self.receipt(signed.tx_hash) is None:
                    raise NonceConsumedError(
                        f"nonce {signed.nonce} of {signed.tx_hash} was used by another transaction"
                    ) from None
            else:
                self._forget_nonce()
                raise
        except Exception:
            self._forget_nonce()  # the node may or may not have taken the nonce: ask it next time
            raise
        self._nonce_used(signed.nonce)
        log.info("sent %s (nonce %d, gas limit %d)", signed.tx_hash, signed.nonce, signed.gas_limit)
        return signed.tx_hash

    def send(self, to: str | None, data: bytes = b"", value: int = 0) -> SignedTransaction:
        """Sign and broadcast; on a stale nonce, reconcile with the chain and sign once more."""
        for attempt in range(2):
            with self._send_lock:
                signed = self.sign(to, data, value)
                try:
                    self.broadcast(signed)
                    return signed
                except NonceConsumedError:
                    if attempt == 1:
                        raise
                    self.reconcile_nonce()
        raise AssertionError("unreachable")

    def transact(
        self, to: str | None, data: bytes = b"", value: int = 0, *, action: str = "transaction"
    ) -> TxResult:
        """Send and wait for the receipt; a reverted transaction raises :class:`TransactionRevertedError`."""
        signed = self.send(to, data, value)
        result = self.wait_for_receipt(signed.tx_hash)
        if not result.status:
            raise TransactionRevertedError(action, "reverted on chain", signed.tx_hash)
        return result

    def write(self, contract: Any, function: str, args: Sequence[Any] = (), value: int = 0) -> TxResult:
        """Call ``contract.function(*args)`` in a transaction (``value`` wei attached) and wait for it."""
        to, data = self.calldata(contract, function, args)
        return self.transact(to, data, value, action=f"{function}()")
