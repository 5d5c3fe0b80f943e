"""The IDX file format of MNIST and its relatives: read (gzip or raw) with every check, and write.

Readers check the magic number, the dimensions against the file length and, when given, the MD5 of the
uncompressed content, and raise UserError naming the file and what was wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

# IDX type codes -> numpy dtypes (big-endian on disk).
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


MAX_BYTES = 1 << 30  # the most uncompressed data one IDX file may declare (MNIST's largest is 47 MB)
MAX_DIMS = 16  # MNIST's files have 1 or 3; numpy takes at most 64
HEAD = 1024  # read first: the longest IDX header (4 + 4 * 255 bytes) and the gzip stream's start


def _content(path: Path) -> tuple[bytes, int]:
    """The uncompressed content of an IDX file, gzip or raw (told apart by the gzip magic bytes), and its
    length. A raw file is measured before it is read: one whose length is not what its header declares
    (a sparse file of gigabytes, say) gives only its head, for parse() to say what is wrong. Gzip is
    decompressed as a stream and stopped as soon as it yields more than its IDX header declares, so a
    small file that expands to gigabytes is refused without holding them."""
    from stnexp.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            head, size = f.read(HEAD), path.stat().st_size
            if head[:2] != b"\x1f\x8b":
                declared = _declared(head)
                content = head + f.read() if declared is not None and declared == size <= MAX_BYTES else head
                return content, size
            if size > MAX_BYTES + HEAD:  # deflate never grows data by more than a few bytes per 16 KB
                raise UserError(f"{path}: {size:,} bytes, more than the {MAX_BYTES:,} an IDX file may hold here")
            raw = head + f.read()
        stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = bytearray(stream.decompress(raw, HEAD))
        pending = stream.unconsumed_tail
        limit = _declared(bytes(out))
        if limit is None:
            limit = MAX_BYTES  # not an IDX header: parse() will say so
        elif limit > MAX_BYTES:
            raise UserError(
                f"{path}: its header declares {limit:,} bytes, more than the {MAX_BYTES:,} an IDX file may hold here"
            )
        while not stream.eof and len(out) <= limit:
            chunk = stream.decompress(pending, 1 << 22)
            pending = stream.unconsumed_tail
            if not chunk and not pending:
                break
            out += chunk
        if len(out) > limit:
            raise UserError(f"{path}: decompresses to more than the {limit:,} bytes its header declares")
        if not stream.eof:
            raise UserError(f"{path}: corrupt or truncated gzip data (the stream ends early)")
        return bytes(out), len(out)
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{path}: corrupt or truncated gzip data ({e})") from None


def _declared(head: bytes) -> int | None:
    """The whole file's length in bytes as an IDX header declares it (None when it is no IDX header)."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES or len(head) < 4 + 4 * head[3]:
        return None
    ndim = head[3]
    shape = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return 4 + 4 * ndim + int(np.prod(shape, dtype=object)) * np.dtype(_DTYPES[head[2]]).itemsize


def parse(
    content: bytes, path: Path | str = "<bytes>", md5: str | None = None, length: int | None = None
) -> np.ndarray:
    """Decode IDX content into an array; checks magic, dimensions, length and optionally the MD5.
    `length`: the file's, where `content` is only its head."""
    from stnexp.errors import UserError

    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number {content[:4].hex() or 'empty'})")
    dtype = np.dtype(_DTYPES[content[2]])
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim > MAX_DIMS:
        raise UserError(
            f"{path}: its header declares {ndim} dimensions, more than the {MAX_DIMS} an IDX file may have here"
        )
    if ndim == 0 or len(content) < header:
        raise UserError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python integers: no overflow
    if expected > MAX_BYTES:
        raise UserError(
            f"{path}: its header declares {expected:,} bytes, more than the {MAX_BYTES:,} an IDX file may hold here"
        )
    length = len(content) if length is None else length
    if length != expected:
        what = "truncated" if length < expected else "has trailing bytes"
        raise UserError(
            f"{path}: {what}: dimensions {'x'.join(map(str, shape))} need {expected} bytes, file has {length}"
        )
    if md5 is not None:
        got = hashlib.md5(content).hexdigest()
        if got != md5:
            raise UserError(f"{path}: corrupt: MD5 of the uncompressed content is {got}, expected {md5}")
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read(path: Path, md5: str | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a numpy array."""
    content, length = _content(path)
    return parse(content, path, md5, length)


def write(path: Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write a uint8/int8 array as IDX; gzip when the name ends in .gz (or compress=True)."""
    array = np.ascontiguousarray(array)
    code = _CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    content = header + array.tobytes()
    path = Path(path)
    if compress if compress is not None else path.suffix == ".gz":
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
