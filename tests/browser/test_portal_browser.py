"""The portal in a real browser: sign in, a roaming bill, a live session, a host's visitor
policy taking effect on the next visit, and another account's URL refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from evroam.core.messages import LoadControlNotice
from evroam.db import schema as s
from evroam.portal.demo import drive_visit
from evroam.utility.bill_store import issue_cycle
from tests.browser.conftest import Portal, sign_in


def test_customer_sees_the_roaming_charge_on_the_bill(page: Any, portal: Portal) -> None:
    sign_in(page, portal, "mhe-c-gina")
    assert page.url.endswith("/accounts/MHE-A-3001")
    assert page.locator("h1").inner_text().startswith("Gina Park")
    page.click("text=2026-03")
    roaming = page.locator("#roaming")
    assert roaming.locator("h2").inner_text() == "Roaming charges"
    utilities = roaming.locator("td.roaming-utility").all_inner_texts()
    assert utilities == ["Pacific Grid & Electric", "Pacific Grid & Electric"]
    assert "S21-roaming-guest" in roaming.inner_text()
    lines = page.locator("table.lines").inner_text()
    assert "Roaming charging at PGX-P-MALL (Pacific Grid & Electric)" in lines
    assert page.locator("svg.chart rect.seg").count() > 0  # the daily kWh-by-period chart


def test_customer_sees_the_live_sessions_schedule_and_incentive(page: Any, portal: Portal) -> None:
    sign_in(page, portal, "pgx-c-alice")
    live = page.locator("#live article.live")
    assert live.count() == 1
    assert live.locator(".incentive").inner_text() == "Incentive rate"
    assert live.locator(".state").inner_text() == "charging on schedule"
    assert live.locator(".current-kw").inner_text() == "7.2 kW"
    assert "of 20.000 requested" in live.locator(".energy").inner_text()
    page.click("text=Schedule and details")
    assert page.locator("h1").inner_text() == "Session LIVE-ALICE"
    rows = page.locator("table.schedule tbody tr")
    assert rows.count() >= 1
    assert "kW" not in rows.first.inner_text()  # a number in the kW column, not a message
    assert page.locator("svg.schedule rect.slot").count() >= 1
    assert page.locator(".completion").inner_text().startswith("Mon 2026-04-06 2")


def test_host_changes_the_visitor_policy_and_the_next_visit_follows_it(
    page: Any, portal: Portal
) -> None:
    sign_in(page, portal, "pgx-c-carol")
    page.goto(f"{portal.url}/accounts/PGX-A-1003/premises/PGX-P-CAROL")
    assert page.locator("input[value=visitor_pays]").is_checked()
    # Before: Bob's visit of March 3 was billed to Bob (visitor pays).
    earlier = page.locator("tr[data-session=S03-pev-pays] .paid-by").inner_text()
    assert earlier == "the visitor"
    page.check("input[value=host_pays]")
    page.click("text=Save policy")
    assert "is now: Host pays" in page.locator(".flash").inner_text()
    assert page.locator("input[value=host_pays]").is_checked()

    # Bob's PEV visits again, through the same service the portal serves.
    service = portal.demo.services["PGX"]
    drive_visit(
        service,
        premise_id="PGX-P-CAROL",
        pev_id="PGX-PEV-BOB",
        session_id="VISIT-AFTER-POLICY",
        plugged_in_at=datetime(2026, 4, 6, 21, 0, tzinfo=UTC),  # 14:00 in Los Angeles
        intervals_wh=[480, 480, 480, 480],
    )
    with portal.demo.engine.begin() as conn:
        issue_cycle(conn, service.registry().utility, "2026-04", portal.demo.clock())

    page.reload()
    after = page.locator("tr[data-session=VISIT-AFTER-POLICY] .paid-by").inner_text()
    assert after == "you (host)"
    page.goto(f"{portal.url}/accounts/PGX-A-1003/bills/2026-04")
    line = page.locator("table.lines tr", has_text="VISIT-AFTER-POLICY")
    assert "Visiting PEVs charged at PGX-P-CAROL, paid by you as host" in line.inner_text()
    assert "1.920" in line.inner_text()


def test_customer_trying_another_accounts_url_is_refused(page: Any, portal: Portal) -> None:
    sign_in(page, portal, "pgx-c-alice")
    for path in ("/accounts/PGX-A-1002", "/accounts/MHE-A-3001/bills/2026-03"):
        answer = page.goto(portal.url + path)
        assert answer.status == 403
        assert "not one of your accounts" in page.locator(".error").inner_text()
    # Signed out, the same URL asks for sign-in first.
    page.click("text=Sign out")
    page.goto(f"{portal.url}/accounts/PGX-A-1001")
    assert "/login?next=/accounts/PGX-A-1001" in page.url


def test_operator_cancels_an_event_with_its_button(page: Any, portal: Portal) -> None:
    now = portal.demo.clock()  # 2026-04-07 02:10 UTC: 19:10 on the 6th in Los Angeles
    portal.demo.services["PGX"].declare_event(
        LoadControlNotice(
            event_id="BROWSER-CANCEL",
            feeder_id="PGX-F102",
            start_at=now + timedelta(days=1),
            end_at=now + timedelta(days=1, hours=2),
            cap_w=2000,
        )
    )
    sign_in(page, portal, "operator-pgx")
    row = page.locator("#events tr", has_text="BROWSER-CANCEL")
    assert row.locator("button.cancel-event").inner_text() == "Cancel"
    row.locator("button.cancel-event").click()
    page.wait_for_load_state()
    flash = page.locator(".flash").inner_text()
    assert flash == "Cancelled load-control event BROWSER-CANCEL at Mon 2026-04-06 19:10"
    row = page.locator("#events tr", has_text="BROWSER-CANCEL")
    assert row.locator(".event-status").inner_text() == "cancelled 2026-04-06 19:10"
    assert row.locator("button").count() == 0
    with portal.demo.engine.connect() as conn:
        cancelled = conn.execute(
            select(s.load_control_events.c.cancelled_at).where(
                s.load_control_events.c.id == "BROWSER-CANCEL"
            )
        ).scalar_one()
    assert cancelled == now
