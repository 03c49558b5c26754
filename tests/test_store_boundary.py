"""The store's boundary: which exceptions are Redis failures (SRM-0008) and which are bugs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from srm.errors import StoreUnavailable
from srm.store import SessionStore

RAISE = "def fail():\n    return None.attribute  # AttributeError, as on a closed transport\n"


def raiser(module: str, filename: str) -> Callable[[], None]:
    """A function of module *module* whose code sits in *filename*; calling it raises."""
    namespace: dict[str, object] = {"__name__": module}
    exec(compile(RAISE, filename, "exec"), namespace)  # noqa: S102
    fail = namespace["fail"]
    assert callable(fail)
    return fail  # type: ignore[return-value]


@pytest.mark.parametrize(
    "filename",
    [
        "/home/dev/redis/srm/srm/api/handlers.py",  # a checkout under a directory named redis
        "/opt/asyncio/srm/srm/api/handlers.py",
        "/srv/app/srm/api/handlers.py",
    ],
)
def test_an_srm_bug_stays_a_bug_wherever_the_checkout_is(filename: str) -> None:
    fail = raiser("srm.api.handlers", filename)
    with pytest.raises(AttributeError), SessionStore._boundary("test"):
        fail()


@pytest.mark.parametrize(
    "module", ["redis.asyncio.connection", "asyncio.selector_events", "uvloop.loop"]
)
def test_a_closed_transport_in_the_client_is_store_unavailable(module: str) -> None:
    # the module decides, not the path (here one with neither "redis" nor "asyncio" in it)
    fail = raiser(module, "/usr/lib/python3/site-packages/somewhere/else.py")
    with pytest.raises(StoreUnavailable) as raised, SessionStore._boundary("test"):
        fail()
    assert raised.value.code == "SRM-0008"


def test_a_module_merely_named_like_redis_is_not_the_client() -> None:
    fail = raiser("redistools.helpers", "/x/redis/redistools/helpers.py")
    with pytest.raises(AttributeError), SessionStore._boundary("test"):
        fail()
