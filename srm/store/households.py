"""Households: an account's home networks and its device registry (API.md, "Households")."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Sequence

from srm import network, records
from srm.errors import SessionNotFound, SrmError, TooSoon
from srm.model import DEFAULT_DEVICE_TYPE, Device, Devices, EndReason
from srm.store.base import StoreBase

# How long the count of an operator call that ends sessions in batches (end-all, end-device,
# a device removal) is kept: far longer than any call with its retries.
END_ALL_MARKER_MS = 600_000


def device(device_id: str, value: str) -> Device:
    """A registry entry: its value is ``<firstSeen>,<lastSeen>,<deviceType>`` (setup.lua)."""
    first, _, rest = value.partition(",")
    last, _, device_type = rest.partition(",")
    return Device(
        device_id=device_id,
        device_type=device_type or DEFAULT_DEVICE_TYPE,
        first_seen=int(first) if first.isdigit() else 0,
        last_seen=int(last) if last.isdigit() else 0,
    )


def in_registration_order(devices: Iterable[Device]) -> list[Device]:
    """Devices as listings show them: first registered first."""
    return sorted(devices, key=lambda d: (d.first_seen, d.device_id))


class Households(StoreBase):
    """Read and change an account's home networks and registered devices."""

    async def home(self, account_id: str) -> list[str]:
        """The account's home networks, as CIDRs."""
        raw = await self._guard("home", self.redis.get(self.keys.account(account_id).home))
        return network.unpack_home(network.to_bytes(raw)) if raw else []

    async def set_home(self, account_id: str, networks: Sequence[network.Network]) -> list[str]:
        """Set the account's home networks (none: clear them); home.changed when they change."""
        ak = self.keys.account(account_id)
        await self._run(
            "home",
            [ak.home, ak.events],
            [self._clock_override(), account_id, network.pack_home(networks), self._events],
        )
        return await self.home(account_id)

    async def devices(self, account_id: str) -> Devices:
        """The account's registered devices (first registered first), the cap, and when the
        next removal is allowed (None: now)."""
        ak = self.keys.account(account_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(ak.devices)
        pipe.get(ak.swap)
        pipe.hgetall(ak.state)
        flat, allowed, state = await self._guard("devices", pipe.execute())
        now = await self.now()
        allowed = int(allowed) if allowed and allowed.isdigit() else 0
        since = now - self.policy.households.forget_after_ms
        streaming = {  # a device streaming now is registered, however old its last setup
            r.device_id
            for field, value in state.items()
            if records.is_session_field(field)
            and (r := records.parse(value)) is not None
            and r.reason is None
            and r.deadline > now
        }
        registered = in_registration_order(
            d
            for d in (device(k, v) for k, v in flat.items())
            if d.last_seen >= since or d.device_id in streaming
        )
        return Devices(
            devices=registered,
            max=self.policy.households.devices_max,
            next_removal_at=allowed if allowed > now else None,
        )

    async def remove_device(
        self, account_id: str, device_id: str, *, by_operator: bool, force: bool = False
    ) -> int:
        """Unregister a device and end its ACTIVE sessions (OPERATOR); how many it ended.

        SessionNotFound when the device is not registered; TooSoon within the swap cooldown
        (*force*, the operator's, skips it and starts none). Like end_device, the calls share
        a marker, so a call run twice still reports what its first run ended.
        """
        ak = self.keys.account(account_id)
        house = self.policy.households
        marker = self.keys.end_all_marker(account_id, str(uuid.uuid4()))
        answer = await self._run(
            "device_remove",
            [*ak.lifecycle(), ak.devices, ak.swap, marker],
            [
                self._clock_override(),
                account_id,
                device_id,
                EndReason.OPERATOR.value,
                self.policy.retention_ms,
                1000,
                END_ALL_MARKER_MS,
                self._events,
                house.swap_cooldown_ms,
                "1" if force else "",
                "OPERATOR" if by_operator else "CLIENT",
                house.forget_after_ms,
            ],
            account=account_id,
        )
        status = int(answer[0])
        if status == 0:
            raise SessionNotFound("no such registered device for this account")
        if status == -1:
            seconds = -(-int(answer[1]) // 1000)
            raise TooSoon(
                "the account removed a device less than devices.swap_cooldown_days ago",
                seconds,
            )
        if int(answer[1]):  # more of its sessions than one batch
            return await self._end_device_batches(
                account_id, device_id, EndReason.OPERATOR, marker, 1000
            )
        with contextlib.suppress(SrmError):  # else it expires by itself
            await self._guard("end_all_marker", self.redis.delete(marker))
        return int(answer[2])

    async def _end_device_batches(
        self, account_id: str, device_id: str, reason: EndReason, marker: str, batch: int
    ) -> int:
        """Run end_device.lua until no ACTIVE session of the device is left; every call adds
        what it ended to *marker*, the call's total (so a batch run twice, its reply lost,
        still counts once). Deletes the marker; returns the total."""
        ak = self.keys.account(account_id)
        while True:
            more, total = await self._run(
                "end_device",
                [*ak.lifecycle(), marker],
                [
                    self._clock_override(),
                    account_id,
                    device_id,
                    reason.value,
                    self.policy.retention_ms,
                    batch,
                    END_ALL_MARKER_MS,
                    self._events,
                ],
                account=account_id,
            )
            if not int(more):
                break
        with contextlib.suppress(SrmError):  # else it expires by itself
            await self._guard("end_all_marker", self.redis.delete(marker))
        return int(total)
