"""Key names: built once per account, and only for shards that exist."""

from __future__ import annotations

import sys
import tracemalloc

import pytest

from srm import keys as k


def test_cached_account_keys_match_freshly_built_ones() -> None:
    keys = k.Keys(shards=16)
    first = keys.account("acct-1")
    assert keys.account("acct-1") is first  # reused, not rebuilt
    assert first == k.Keys(shards=16).account("acct-1")
    assert first.state == f"{keys.tag(first.shard)}:a:acct-1"
    assert keys.parse_account_key(first.state) == ("acct-1", "state")
    assert keys.parse_account_key(first.limit) == ("acct-1", "limit")
    assert keys.parse_account_key(f"{keys.tag(3)}:acct:a:b:active") == ("a:b", "active")
    assert keys.parse_account_key(f"{keys.tag(3)}:due") is None
    with pytest.raises(ValueError, match="shard"):
        keys.tag(16)


@pytest.mark.parametrize("alphabet", ["ab", "é\U0001f600"])  # 1- and 4-byte code points
def test_the_account_key_cache_is_bounded_in_bytes(alphabet: str) -> None:
    """Longest ids (256 characters): the cache of one process stays within its bytes."""
    keys = k.Keys(256)
    written = peak = n = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while written < 1.5 * k.ACCOUNT_CACHE_BYTES:  # the id is in the map and 4 key names
            account_id = f"{n:08d}" + alphabet[n % 2] * 248
            keys.account(account_id)
            written += 5 * sys.getsizeof(account_id)
            n += 1
            if n % 256 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    assert peak <= k.ACCOUNT_CACHE_BYTES * 1.1
    assert keys.account(account_id).state.endswith(account_id)


def test_a_keep_alive_takes_the_lifecycle_keys_up_to_the_due_index() -> None:
    """keepalive.lua reads its keys as account_keys does (own keys, then the shard's from the
    due index on): kept() must be that prefix of lifecycle(), so no key moves position."""
    ak = k.Keys(16).account("acct-1")
    assert ak.kept() == ak.lifecycle()[:4]
    assert ak.kept()[-1] == ak.due
