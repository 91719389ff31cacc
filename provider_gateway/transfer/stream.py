"""The file-like object ``upload_fileobj`` reads: where bytes are counted and checked.

s3transfer reads a non-seekable source one part at a time and treats a
short read as the end of a part, so :meth:`TransferStream.read` always fills
the amount asked for unless the file ends. The checks that decide whether the
object may exist (size, checksum, cancellation) raise from ``read()``: the
upload then fails before its last part is completed, and s3transfer aborts
the multipart upload, so a bad file never becomes an object.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from provider_gateway.errors import GatewayError, IntegrityError, SourceUnavailable
from provider_gateway.messages import Checksum
from provider_gateway.protocols.base import SourceStream

log = logging.getLogger(__name__)

# Large reads from the source: small ones cost CPU per call (8 KiB reads halve the speed).
READ_PIECE = 1024 * 1024

CancelCheck = Callable[[], GatewayError | None]
ProgressCallback = Callable[[int], None]
Reopen = Callable[[int], SourceStream]
"""Opens the same file again from a byte offset (with its own retries and backoff)."""


class TransferStream:
    """Reads a source stream for upload, verifying it as the bytes pass."""

    def __init__(
        self,
        source: SourceStream,
        expected_size: int | None,
        expected_checksum: Checksum | None,
        cancelled: CancelCheck,
        progress: ProgressCallback | None = None,
        reopen: Reopen | None = None,
        resumes: int = 0,
    ) -> None:
        self._source = source
        self._reopen = reopen
        self._resumes_left = resumes
        self.resumed = 0
        self._expected_size = expected_size
        self._expected = expected_checksum
        self._hash = hashlib.new(expected_checksum.algorithm) if expected_checksum else None
        self._cancelled = cancelled
        self._progress = progress
        self.bytes = 0
        self.error: GatewayError | None = None
        self._eof = False

    def read(self, amount: int = -1) -> bytes:
        """Up to ``amount`` bytes (all that is left if negative); short only at the end."""
        try:
            return self._read(amount)
        except GatewayError as exc:
            self.error = exc
            raise

    def _read(self, amount: int) -> bytes:
        if self._eof:
            return b""
        pieces: list[bytes] = []
        wanted = amount if amount >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            self._check_cancelled()
            ask = READ_PIECE if wanted is None else min(READ_PIECE, wanted - got)
            piece = self._read_healing(ask)
            if not piece:
                self._eof = True
                self._verify_end()
                break
            self._account(piece)
            pieces.append(piece)
            got += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _read_healing(self, amount: int) -> bytes:
        """A read from the source that, on a transient failure, reopens it where it broke off.

        upload_fileobj never sees the break: the bytes already uploaded stay
        uploaded, and only what is missing is fetched again.
        """
        while True:
            try:
                piece = self._source.read(amount)
            except Exception as exc:
                self._raise_if_cancelled(exc)
                if not (isinstance(exc, GatewayError) and exc.retryable and self._can_resume()):
                    raise
                self._resume(exc)
                continue
            if not piece:
                self._check_cancelled()  # an aborted connection may look like an end: never trust it then
            if piece or not self._ended_early():
                return piece
            self._resume(SourceUnavailable(f"the source ended at byte {self.bytes} of {self._source.size}"))

    def _can_resume(self) -> bool:
        return self._reopen is not None and self._resumes_left > 0 and self._cancelled() is None

    def _ended_early(self) -> bool:
        # Against what the source itself announced: a file shorter than the request says is an
        # IntegrityError, but a transfer cut before the source's own size is a break to heal.
        announced = self._source.size
        return announced is not None and self.bytes < announced and self._can_resume()

    def _resume(self, reason: GatewayError) -> None:
        assert self._reopen is not None
        self._resumes_left -= 1
        self.resumed += 1
        log.warning("transfer interrupted at byte %d (%s): resuming", self.bytes, reason.message)
        try:
            self._source.close()
        except Exception:  # the broken stream may fail to close: it is replaced either way
            log.debug("closing the interrupted source failed", exc_info=True)
        self._source = self._reopen(self.bytes)

    def _check_cancelled(self) -> None:
        reason = self._cancelled()
        if reason is not None:
            raise reason

    def _raise_if_cancelled(self, failure: Exception) -> None:
        """A read that failed because its task was cancelled (its connection aborted) fails with the cancel's reason."""
        reason = self._cancelled()
        if reason is not None:
            raise reason from failure

    def _account(self, piece: bytes) -> None:
        self.bytes += len(piece)
        if self._hash is not None:
            self._hash.update(piece)
        if self._expected_size is not None and self.bytes > self._expected_size:
            raise IntegrityError(f"received more than the expected {self._expected_size} bytes")
        if self._progress is not None:
            self._progress(len(piece))

    def _verify_end(self) -> None:
        if self._expected_size is not None and self.bytes != self._expected_size:
            raise IntegrityError(f"received {self.bytes} bytes, expected {self._expected_size}")
        digest = self.checksum
        if self._expected is not None and digest is not None and digest.value != self._expected.value:
            raise IntegrityError(f"{self._expected.algorithm} is {digest.value}, expected {self._expected.value}")

    @property
    def checksum(self) -> Checksum | None:
        """The digest of the bytes read so far, in the requested algorithm."""
        if self._hash is None or self._expected is None:
            return None
        return Checksum(self._expected.algorithm, self._hash.hexdigest())

    def close(self) -> None:
        """Close the source currently read (a resume replaces it)."""
        self._source.close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False
