"""
Fixtures of the contract suite.

``storage`` is parametrized over memory, Redis (sync and async, ``FCALL`` and
``EVALSHA``) and Redis Cluster (sync and async).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from contract_storages import KINDS, SyncStorage, make_storage

_identifiers = itertools.count()


@pytest.fixture(
    params=[
        pytest.param(kind, marks=[pytest.mark.redis] if kind != "memory" else [])
        for kind in KINDS
    ]
)
def storage(request: pytest.FixtureRequest) -> Iterator[SyncStorage]:
    """Each storage in turn, closed after the test."""
    made = make_storage(request.param, request)
    yield made
    made.close()


@pytest.fixture
def identifier() -> str:
    """An identifier no other test uses (memory storages are shared nowhere)."""
    return f"client-{next(_identifiers)}"
