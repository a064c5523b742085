"""OCPP 2.0.1: a station's messages mapped onto the seed's flow (docs/ocpp.md, table 2).

```
BootNotification ─▶ Accepted, heartbeat, currentTime (time sync) ─▶ SetVariables
Authorize(idToken) ─▶ Accepted + personalMessage (program recognised or not)
TransactionEvent Started/Updated/Ended (seqNo, offline) ─▶ bind at the first idToken,
     register chain ─▶ interval readings, Ended ─▶ session report; retries by seqNo
NotifyEVChargingNeeds (the PEV's Energy Request) ─▶ request_energy ─▶ SetChargingProfile
```
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ocpp.v201 import ChargePoint, call, call_result  # type: ignore[import-untyped]

from evroam.protocols.ocpp.link import StationLink
from evroam.protocols.ocpp.mapping import (
    ENERGY_REGISTER,
    BadPayload,
    energy_request_from_needs,
    parse_instant,
    pev_id_of_token,
    profile_v201,
    register_samples,
)
from evroam.protocols.ocpp.port import EventIn, NeedsIn, ProfilePush, Reply, SamplesIn
from evroam.protocols.ocpp.wire import LOG, after, on

if TYPE_CHECKING:
    pass

VENDOR = "org.evroam"


def _instant(text: Any) -> Any:
    try:
        return parse_instant(text)
    except BadPayload:
        return None


def token_info(reply: Reply | None, known: bool | None = None) -> dict[str, Any]:
    """Accepted, always; what the binding gave (incentive or not) in the personal message
    and in customData, where the station can show it to the driver (seed: "PEV is able to
    provide indicator to customer that binding has been successful")."""
    if reply is not None:
        text = reply.message or ""
        data = {
            "vendor_id": VENDOR,
            "bound": reply.bound,
            "incentive": reply.incentive,
            "case": reply.case,
        }
    else:
        text = (
            "PEV program recognised: the binding is confirmed when charging starts"
            if known
            else "Charging at this premise's default rate"
        )
        data = {"vendor_id": VENDOR, "known": bool(known)}
    info: dict[str, Any] = {"status": "Accepted", "custom_data": data}
    if text:
        info["personal_message"] = {"format": "UTF8", "content": text[:512]}
    return info


class V201Station(StationLink, ChargePoint):  # type: ignore[misc]
    __init__ = StationLink.__init__

    @on("BootNotification")
    async def on_boot(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        facts = {
            "vendor": charging_station.get("vendor_name"),
            "model": charging_station.get("model"),
            "serial": charging_station.get("serial_number"),
            "firmware": charging_station.get("firmware_version"),
        }
        await self.csms.worker.run(self.csms.desk.boot, self.id, "2.0.1", facts)
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
        """The seed's "EUMD receives configuration" in 2.0.1's device model."""
        interval = str(self.station.interval_s)
        settings = [
            ("SampledDataCtrlr", "TxUpdatedInterval", interval),
            ("SampledDataCtrlr", "TxUpdatedMeasurands", ENERGY_REGISTER),
            ("SampledDataCtrlr", "TxStartedMeasurands", ENERGY_REGISTER),
            ("SampledDataCtrlr", "TxEndedMeasurands", ENERGY_REGISTER),
            ("AlignedDataCtrlr", "Interval", interval),
            ("AlignedDataCtrlr", "Measurands", ENERGY_REGISTER),
        ]
        answer = await self.call_quietly(
            call.SetVariables(
                set_variable_data=[
                    {"attribute_value": value, "component": {"name": c}, "variable": {"name": v}}
                    for c, v, value in settings
                ]
            )
        )
        if answer is not None:
            refused = [r for r in answer.set_variable_result if r["attribute_status"] != "Accepted"]
            if refused:
                LOG.info("%s: SetVariables not all accepted: %s", self.id, refused)

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=self.now_text())

    @on("Authorize")
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        enrolled = await self.csms.worker.run(self.csms.desk.enrolled, pev_id_of_token(id_token))
        return call_result.Authorize(id_token_info=token_info(None, enrolled))

    @on("StatusNotification")
    async def on_status(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> Any:
        await self.csms.worker.run(
            self.csms.desk.status,
            self.id,
            evse_id,
            connector_id,
            connector_status,
            None,
            _instant(timestamp),
        )
        return call_result.StatusNotification()

    @on("MeterValues")
    async def on_meter_values(self, evse_id: int, meter_value: list[Any], **_: Any) -> Any:
        # Outside a transaction (clock-aligned idle samples): kept, not billed.
        samples, bad = register_samples(meter_value, "2.0.1")
        payload = {"evse_id": evse_id, "meter_value": meter_value}
        await self.csms.worker.samples(self.id, SamplesIn(None, evse_id, samples, bad, payload))
        return call_result.MeterValues()

    @on("TransactionEvent")
    async def on_transaction_event(
        self,
        event_type: str,
        timestamp: str,
        trigger_reason: str,
        seq_no: int,
        transaction_info: dict[str, Any],
        meter_value: list[Any] | None = None,
        offline: bool | None = None,
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        samples, bad = register_samples(meter_value or (), "2.0.1")
        event = EventIn(
            event_type=event_type,
            transaction_ref=str(transaction_info["transaction_id"]),
            seq_no=seq_no,
            stamped=timestamp,
            at=_instant(timestamp),
            trigger_reason=trigger_reason,
            offline=bool(offline),
            evse_id=None if evse is None else int(evse["id"]),
            pev_id=pev_id_of_token(id_token),
            has_token=id_token is not None,
            stopped_reason=transaction_info.get("stopped_reason"),
            samples=samples,
            bad=bad,
            payload={
                "event_type": event_type,
                "timestamp": timestamp,
                "seq_no": seq_no,
                "transaction_info": transaction_info,
                "meter_value": meter_value,
                "offline": offline,
            },
        )
        if event_type == "Updated" and id_token is None:
            # meter values during a transaction: the group commit, like MeterValues
            job = SamplesIn(event.transaction_ref, event.evse_id or 0, samples, bad, None, event)
            await self.csms.worker.samples(self.id, job)
            return call_result.TransactionEvent()
        reply = await self.csms.worker.run(self.csms.desk.event, self.id, event)
        if id_token is None:
            return call_result.TransactionEvent()
        return call_result.TransactionEvent(id_token_info=token_info(reply))

    @on("NotifyEVChargingNeeds")
    async def on_charging_needs(
        self, charging_needs: dict[str, Any], evse_id: int, call_unique_id: str, **_: Any
    ) -> Any:
        now = self.csms.desk.now()
        dwell = timedelta(hours=self.csms.settings.default_dwell_h)
        try:
            # the session is the utility's to name: the one running on this EVSE
            asked = energy_request_from_needs("-", charging_needs, now, dwell)
        except BadPayload as err:
            LOG.warning("%s: charging needs not usable: %s", self.id, err)
            reply = None
        else:
            needs = NeedsIn(evse_id, asked.energy_wh, asked.max_w, asked.departure_at)
            reply = await self.csms.worker.run(self.csms.desk.needs, self.id, needs)
        if reply is None or reply.plan is None:
            # No bound session to plan (fallback charging): the EV charges as it likes.
            return call_result.NotifyEVChargingNeeds(status="Rejected")
        self.remember(call_unique_id, reply)
        return call_result.NotifyEVChargingNeeds(status="Accepted")

    @after("NotifyEVChargingNeeds")
    def after_charging_needs(self, evse_id: int, call_unique_id: str, **_: Any) -> None:
        self.push_after(call_unique_id, evse_id)

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on("SecurityEventNotification")
    def on_security_event(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()

    async def push_profile(self, push: ProfilePush) -> None:
        schedule = self.schedule(push.available)
        if schedule is None:
            return
        profile = profile_v201(schedule, push.transaction_id, push.transaction_ref, stack_level=1)
        answer = await self.call_quietly(
            call.SetChargingProfile(evse_id=push.evse_id, charging_profile=profile)
        )
        LOG.info(
            "%s: TxProfile for %s: %s",
            self.id,
            push.transaction_ref,
            getattr(answer, "status", None),
        )
