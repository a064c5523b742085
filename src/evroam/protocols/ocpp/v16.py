"""OCPP 1.6J: a station's messages mapped onto the seed's flow (docs/ocpp.md, table 1).

```
BootNotification ─▶ Accepted, heartbeat, currentTime (time sync) ─▶ ChangeConfiguration
Authorize(idTag) ─▶ Accepted (always: a PEV never blocked, seed 1.4.1)
StartTransaction ─▶ transactionId = CSMS's number; bind(idTag) ─▶ [TxProfile from a default
                    Energy Request for a bound PEV]
MeterValues ─▶ register chain ─▶ interval readings (group commit, then the answer)
StopTransaction ─▶ last readings ─▶ session report ─▶ rated; a retry changes nothing
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocpp.v16 import ChargePoint, call, call_result  # type: ignore[import-untyped]

from evroam.protocols.ocpp.link import StationLink
from evroam.protocols.ocpp.mapping import (
    ENERGY_REGISTER,
    BadPayload,
    parse_instant,
    pev_id_of_token,
    profile_v16,
    register_samples,
)
from evroam.protocols.ocpp.port import ProfilePush, SamplesIn, StartIn, StopIn
from evroam.protocols.ocpp.wire import LOG, after, on

if TYPE_CHECKING:
    pass

ACCEPTED = {"status": "Accepted"}


def _instant(text: Any) -> Any:
    try:
        return parse_instant(text)
    except BadPayload:
        return None


class V16Station(StationLink, ChargePoint):  # type: ignore[misc]
    __init__ = StationLink.__init__

    @on("BootNotification")
    async def on_boot(self, charge_point_vendor: str, charge_point_model: str, **kw: Any) -> Any:
        facts = {
            "vendor": charge_point_vendor,
            "model": charge_point_model,
            "serial": kw.get("charge_point_serial_number") or kw.get("charge_box_serial_number"),
            "firmware": kw.get("firmware_version"),
        }
        await self.csms.worker.run(self.csms.desk.boot, self.id, "1.6", facts)
        return call_result.BootNotification(
            current_time=self.now_text(),
            interval=self.csms.settings.heartbeat_s,
            status="Accepted",
        )

    @after("BootNotification")
    def after_boot(self, **_: Any) -> None:
        if self.csms.settings.configure_stations:
            self.csms.spawn(self.configure())

    async def configure(self) -> None:
        """The seed's "EUMD receives configuration": sample the register every EUMD
        interval, clock-aligned, and at the stop."""
        interval = str(self.station.interval_s)
        for key, value in (
            ("MeterValueSampleInterval", interval),
            ("MeterValuesSampledData", ENERGY_REGISTER),
            ("ClockAlignedDataInterval", interval),
            ("MeterValuesAlignedData", ENERGY_REGISTER),
            ("StopTxnSampledData", ENERGY_REGISTER),
        ):
            answer = await self.call_quietly(call.ChangeConfiguration(key=key, value=value))
            if answer is not None and answer.status != "Accepted":
                LOG.info("%s: ChangeConfiguration %s=%s: %s", self.id, key, value, answer.status)

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=self.now_text())

    @on("Authorize")
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        # Every PEV charges (seed 1.4.1); who pays is decided at StartTransaction.
        return call_result.Authorize(id_tag_info=ACCEPTED)

    @on("StatusNotification")
    async def on_status(self, connector_id: int, error_code: str, status: str, **kw: Any) -> Any:
        at = _instant(kw.get("timestamp")) if kw.get("timestamp") else None
        await self.csms.worker.run(
            self.csms.desk.status, self.id, connector_id, connector_id, status, error_code, at
        )
        return call_result.StatusNotification()

    @on("StartTransaction")
    async def on_start(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: str,
        call_unique_id: str,
        **_: Any,
    ) -> Any:
        settings = self.csms.settings
        start = StartIn(
            connector_id,
            pev_id_of_token(id_tag),
            meter_start,
            timestamp,
            _instant(timestamp),
            plan_wh=settings.v16_default_energy_wh,
            dwell_s=round(settings.default_dwell_h * 3600),
        )
        reply = await self.csms.worker.run(self.csms.desk.start_v16, self.id, start)
        self.remember(call_unique_id, reply)
        return call_result.StartTransaction(
            transaction_id=reply.transaction_id, id_tag_info=ACCEPTED
        )

    @after("StartTransaction")
    def after_start(self, connector_id: int, call_unique_id: str, **_: Any) -> None:
        self.push_after(call_unique_id, connector_id)

    @on("MeterValues")
    async def on_meter_values(
        self, connector_id: int, meter_value: list[Any], transaction_id: int | None = None, **_: Any
    ) -> Any:
        samples, bad = register_samples(meter_value, "1.6")
        ref = None if transaction_id is None else str(transaction_id)
        payload = {
            "connector_id": connector_id,
            "transaction_id": transaction_id,
            "meter_value": meter_value,
        }
        await self.csms.worker.samples(self.id, SamplesIn(ref, connector_id, samples, bad, payload))
        return call_result.MeterValues()

    @on("StopTransaction")
    async def on_stop(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[Any] | None = None,
        **_: Any,
    ) -> Any:
        samples, bad = register_samples(transaction_data or (), "1.6")
        stop = StopIn(
            str(transaction_id),
            meter_stop,
            timestamp,
            _instant(timestamp),
            reason,
            pev_id_of_token(id_tag),
            samples,
            bad,
        )
        await self.csms.worker.run(self.csms.desk.stop, self.id, stop)
        if id_tag is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(id_tag_info=ACCEPTED)

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status(self, **_: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()

    async def push_profile(self, push: ProfilePush) -> None:
        schedule = self.schedule(push.available)
        if schedule is None:
            return
        profile = profile_v16(schedule, push.transaction_id, push.transaction_id, stack_level=1)
        answer = await self.call_quietly(
            call.SetChargingProfile(connector_id=push.evse_id, cs_charging_profiles=profile)
        )
        LOG.info(
            "%s: TxProfile for %s: %s",
            self.id,
            push.transaction_ref,
            getattr(answer, "status", None),
        )
