"""Key names: built once per account, and only for shards that exist."""

from __future__ import annotations

import pytest

from srm import keys as k


def test_cached_account_keys_match_freshly_built_ones() -> None:
    keys = k.Keys(shards=16)
    first = keys.account("acct-1")
    assert keys.account("acct-1") is first  # reused, not rebuilt
    assert first == k.Keys(shards=16).account("acct-1")
    assert keys.session("acct-1", "s") == f"{keys.tag(first.shard)}:sess:s"
    with pytest.raises(ValueError, match="shard"):
        keys.tag(16)
