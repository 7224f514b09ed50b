"""Identities (issue 13): the simulator's client companies, and choosing among them."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from extractor import soap
from extractor.errors import IdentityRefused, UsageError
from extractor.parser import RecordStream
from extractor.records.orders import OrderSink, Selection
from extractor.service.identities import Identity, chosen, identities
from extractor.service.session import Session
from extractor.service.transport import Transport
from extractor.simulator.faults import FaultConfig
from extractor.simulator.server import Simulator
from tests.conftest import CREDS
from tests.helpers import DEMO_ENV

SYNC_ID = "{http://24sevenOffice.com/webservices}int"


@pytest.fixture
async def fleet(start_simulator: Any) -> Simulator:
    sim: Simulator = await start_simulator(
        orders=200, identities=3, blocked_identities=(3,), disabled_identities=(2,)
    )
    return sim


async def _session(simulator: Simulator, identity: int | None) -> tuple[Transport, Session]:
    transport = Transport(simulator.url, soap.SOAP11)
    chosen_id = simulator.company(identity).identity_id if identity else None
    session = Session(transport, dataclasses.replace(CREDS, identity_id=chosen_id))
    try:
        await session.login()
    except BaseException:
        await transport.close()
        raise
    return transport, session


async def _listed(session: Session) -> list[int]:
    stream = await session.call(
        soap.GET_ORDER_SYNC_LIST,
        {"syncParams": {}},
        lambda: RecordStream(SYNC_ID, lambda elem: int(elem.text or "")),
    )
    return list(stream.records)


async def test_get_identities_lists_every_company_and_the_current_one(fleet: Simulator) -> None:
    transport, session = await _session(fleet, 2)
    try:
        listed = await identities(session)
    finally:
        await transport.close()
    assert [(i.id, i.client_id, i.client_name) for i in listed] == [
        (c.identity_id, c.client_id, c.name) for c in fleet.companies
    ]
    assert [i.current for i in listed] == [False, True, False]
    assert [i.default for i in listed] == [True, False, False]
    assert [i.disabled for i in listed] == [False, True, False]


async def test_a_login_on_an_identity_works_on_that_company_only(fleet: Simulator) -> None:
    first, second = fleet.company(1).tenant, fleet.company(2).tenant
    assert set(first.ids) & set(second.ids), "companies' OrderIds overlap, as real ones do"
    transport, session = await _session(fleet, 2)
    try:
        assert await _listed(session) == second.sync_list(None, None)
        shared = sorted(set(first.ids) & set(second.ids))[:5]
        sink = await session.call(
            soap.GET_INVOICES, Selection().params(shared), lambda: OrderSink(Selection(), shared)
        )
    finally:
        await transport.close()
    batch = sink.combined()
    assert batch is not None
    got = {row["OrderId"]: row for row in batch.orders.to_pylist()}
    assert sorted(got) == shared
    for order_id in shared:
        expected = second.truth(order_id).order
        assert {name: got[order_id][name] for name in expected} == expected
    assert all(first.truth(i).order != second.truth(i).order for i in shared)
    assert fleet.company(2).stats["GetInvoices"] == 1 and fleet.company(1).stats["GetInvoices"] == 0


async def test_set_identity_by_id_switches_the_session_for_everyone_using_it(
    fleet: Simulator,
) -> None:
    """Why a fleet never switches a shared session: the switch moves every later call."""
    switch = soap.Operation("authService", soap.AUTH_PATH, "SetIdentityById")
    transport, session = await _session(fleet, 1)
    try:
        assert await _listed(session) == fleet.company(1).tenant.sync_list(None, None)
        await session.call(
            switch,
            {"identityId": fleet.company(2).identity_id},
            lambda: RecordStream(SYNC_ID, lambda elem: elem.text),
        )
        assert await _listed(session) == fleet.company(2).tenant.sync_list(None, None)
        assert [i.current for i in await identities(session)] == [False, True, False]
        with pytest.raises(IdentityRefused, match="blocked"):
            await session.call(
                switch,
                {"identityId": fleet.company(3).identity_id},
                lambda: RecordStream(SYNC_ID, lambda elem: elem.text),
            )
    finally:
        await transport.close()


async def test_a_login_without_identity_is_on_the_default_one(fleet: Simulator) -> None:
    transport, session = await _session(fleet, None)
    try:
        assert await _listed(session) == fleet.tenant.sync_list(None, None)
        assert [i.current for i in await identities(session)] == [True, False, False]
    finally:
        await transport.close()


async def test_a_blocked_identity_is_refused_at_login(fleet: Simulator) -> None:
    with pytest.raises(IdentityRefused, match="The provided IdentityId is blocked"):
        await _session(fleet, 3)


async def test_each_identity_has_its_own_budget(start_simulator: Any) -> None:
    sim: Simulator = await start_simulator(
        orders=50, identities=2, faults=FaultConfig(budget=4, window=3600)
    )
    for identity in (1, 2):
        transport, session = await _session(sim, identity)
        try:
            for _ in range(2):  # a login and two calls each, on its own budget of 4
                await _listed(session)
        finally:
            await transport.close()
    assert [c.stats["requests"] for c in sim.companies] == [3, 3]
    assert sim.stats["faults"] == 0


def _identity(number: int, disabled: bool = False) -> Identity:
    guid = f"00000000-0000-4000-8000-00000000000{number}"
    return Identity(guid, number, f"C{number}", disabled=disabled)


def test_all_is_every_identity_less_the_disabled_and_excluded() -> None:
    listed = [_identity(1), _identity(2, disabled=True), _identity(3), _identity(4)]
    assert chosen(listed, ["all"]) == [listed[0], listed[2], listed[3]]
    assert chosen(listed, ["all"], [listed[3].id.upper()]) == [listed[0], listed[2]]
    assert chosen(listed, [listed[3].id, listed[0].id, listed[3].id]) == [listed[0], listed[3]]


@pytest.mark.parametrize(
    ("asked", "excluded", "message"),
    [
        (["00000000-0000-4000-8000-000000000009"], [], "not one of the 4 identities"),
        (["00000000-0000-4000-8000-000000000002"], [], "is disabled"),
        (["all", "00000000-0000-4000-8000-000000000001"], [], "give it alone"),
        (["company-one"], [], "is not a guid"),
        (["all"], ["00000000-0000-4000-8000-000000000009"], "--exclude-identity"),
    ],
)
def test_identities_that_cannot_be_chosen_are_refused_in_one_line(
    asked: list[str], excluded: list[str], message: str
) -> None:
    listed = [_identity(1), _identity(2, disabled=True), _identity(3), _identity(4)]
    with pytest.raises(UsageError, match=message):
        chosen(listed, asked, excluded)


async def test_the_identities_command_lists_them(fleet: Simulator, cli_beside: Any) -> None:
    code, out, err = await cli_beside(
        "identities", "--base-url", fleet.url, "--max-requests-per-hour", "0", env=DEMO_ENV
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1] == "3 identities, 1 disabled"
    first, second, third = fleet.companies
    assert lines[0] == f"{first.identity_id}  {first.client_id}  {first.name}  (current, default)"
    assert lines[1] == f"{second.identity_id}  {second.client_id}  {second.name}  (disabled)"
    code, out, _ = await cli_beside(
        "identities", "--json", "--base-url", fleet.url, "--max-requests-per-hour", "0",
        env=DEMO_ENV,
    )  # fmt: skip
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["identity_id"], r["client_name"], r["disabled"]) for r in rows] == [
        (c.identity_id, c.name, c.disabled) for c in fleet.companies
    ]
    assert third.identity_id in out and CREDS.password not in out


async def test_the_identities_command_with_a_wrong_password_is_one_line(
    fleet: Simulator, cli_beside: Any
) -> None:
    env = DEMO_ENV | {"TFSO_PASSWORD": "wrong-password"}
    code, out, err = await cli_beside("identities", "--base-url", fleet.url, env=env)
    assert code == 4 and out == ""  # permanent: a scheduler's retries would not mend it
    assert err.count("\n") == 1 and "login refused" in err and "wrong-password" not in err
