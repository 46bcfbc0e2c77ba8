"""JSON text for what the gateway relays: orjson, except for the integers beyond 64 bits JSON allows and orjson
cannot hold (it writes none, and reads them as floats). Those few texts go through the stdlib, exactly."""

from __future__ import annotations

import json
from typing import Any

import orjson

# 19 digits in a row: maybe an integer orjson would turn into a float (2**63 has 19). Rare outside such numbers
# (a long digit string or a float's fraction), where the stdlib's reading is merely slower, and the same.
# Found with C-speed passes (every digit → "0", everything else → " "; ~0.7 ns a byte, a regex takes 12).
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def dumps(value: Any) -> bytes:
    """orjson's bytes; the stdlib's (same compact form) when `value` holds an integer beyond 64 bits."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
        # allow_nan=False: never NaN/Infinity, which are not JSON (orjson would write null; this raises instead)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def loads(data: bytes | str) -> Any:
    """orjson's reading; the stdlib's when the text may hold an integer beyond 64 bits (so it stays an integer).
    Raises orjson.JSONDecodeError (a ValueError) either way."""
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_RUN not in raw.translate(_DIGITS):
        return orjson.loads(raw)
    try:
        return json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:
        raise orjson.JSONDecodeError(str(exc), raw.decode("utf-8", "replace"), 0) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
