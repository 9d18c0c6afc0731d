"""What may identify a client: the check every storage and the facade share."""

from __future__ import annotations

from ..errors import KeyGenerationError

MAX_IDENTIFIER_LENGTH = 65_536
"""Characters an identifier may hold (an address, a user id, an API key...)."""


def check_identifier(identifier: object) -> None:
    """Raise ``KeyGenerationError`` unless ``identifier`` can key a client."""
    if not isinstance(identifier, str):
        raise KeyGenerationError(
            f"identifier must be a string, got {type(identifier).__name__}",
            context={"identifier_type": type(identifier).__name__},
        )

    if not identifier or len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise KeyGenerationError(
            f"identifier must have 1 to 65,536 characters, got {len(identifier):,}",
            context={"identifier_length": len(identifier)},
        )
