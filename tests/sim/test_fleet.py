"""The fleet: rescaling, the service-discovery file, and scale-ups that cannot be carried out in full."""

import asyncio
import json
import socket
from contextlib import asynccontextmanager

import aiohttp
import pytest

from burstpilot.errors import BurstpilotError
from burstpilot.sim.fleet import MAX_PORT, Fleet, free_port_block
from tests.support.sim_replica import MODEL, PROFILE, stream_tokens


def sd_targets(path) -> list[str]:
    return json.loads(path.read_text())[0]["targets"]


def replica_loops() -> int:
    """Step loops of replicas running in this process."""
    return sum(1 for t in asyncio.all_tasks() if "Replica._loop" in repr(t.get_coro()))


@asynccontextmanager
async def fleet_at(port: int, replicas: int, **kw):
    fleet = Fleet(PROFILE, port, **({"cold_start_s": 0.0} | kw))
    await fleet.start(replicas)
    try:
        async with aiohttp.ClientSession() as s:
            yield fleet, s, f"http://127.0.0.1:{port}"
    finally:
        await fleet.close()


def hold(port: int) -> socket.socket:
    """Another process's listener on a port (a socket this test holds)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


async def until(cond, what: str, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("processes", [0, 2])
def test_fleet_rescales_and_keeps_sd_file_equal_to_ready_replicas(tmp_path, processes):
    sd = tmp_path / "targets.json"

    async def go():
        port = free_port_block(6)
        async with fleet_at(port, 2, sd_file=sd, replica_processes=processes) as (fleet, s, url):
            assert sd_targets(sd) == [f"127.0.0.1:{port + 1}", f"127.0.0.1:{port + 2}"]
            _, chunks = await stream_tokens(
                s, url, {"model": MODEL, "prompt": "a", "max_tokens": 3, "ignore_eos": True}
            )
            assert len(chunks) == 3
            fleet.cold_start_s = 0.4
            st = await (await s.post(url + "/admin/replicas", json={"replicas": 3})).json()
            assert (st["desired"], st["ready"], st["starting"]) == (3, 2, 1)
            assert len(sd_targets(sd)) == 2  # the new one is still loading
            assert (await s.get(f"http://127.0.0.1:{port + 3}/health")).status == 503
            await until(lambda: len(sd_targets(sd)) == 3, "the new replica in the SD file")
            assert (await s.get(f"http://127.0.0.1:{port + 3}/health")).status == 200
            assert (await s.post(url + "/admin/replicas", json={"replicas": "x"})).status == 400
            st = await (await s.post(url + "/admin/replicas", json={"replicas": 1})).json()
            assert (st["desired"], st["ready"]) == (1, 1) and len(
                sd_targets(sd)
            ) == 1  # draining ones leave it
            await until(lambda: len(fleet.members) == 1, "the drained replicas to leave")
            assert (await (await s.get(url + "/admin/replicas")).json())["ready"] == 1
        assert sd_targets(sd) == []

    asyncio.run(go())


@pytest.mark.parametrize("processes", [0, 2])
def test_scale_up_skips_a_port_another_process_holds(tmp_path, processes):
    sd = tmp_path / "targets.json"

    async def go():
        port = free_port_block(6)
        other = hold(port + 2)
        try:
            async with fleet_at(port, 1, sd_file=sd, replica_processes=processes) as (fleet, s, url):
                r = await s.post(url + "/admin/replicas", json={"replicas": 2})
                st = await r.json()
                assert r.status == 200 and (st["desired"], st["ready"]) == (2, 2)
                assert [m["port"] for m in st["replicas"]] == [port + 1, port + 3]
                assert sd_targets(sd) == [f"127.0.0.1:{port + 1}", f"127.0.0.1:{port + 3}"]
                other.close()  # the slot is free again: the next replica takes it
                st = await (await s.post(url + "/admin/replicas", json={"replicas": 3})).json()
                assert sorted(m["port"] for m in st["replicas"]) == [port + 1, port + 2, port + 3]
        finally:
            other.close()

    asyncio.run(go())


def top_ports_free(first: int) -> bool:
    try:
        for s in [hold(p) for p in range(first, MAX_PORT + 1)]:
            s.close()
    except OSError:
        return False
    return True


def test_scale_up_past_the_last_port_rolls_back_and_answers_a_clear_error(tmp_path):
    # the ports above the kernel's ephemeral range (32768-60999 by default) are held only by explicit binds
    base = MAX_PORT - 3  # router, then replicas on the last three ports
    if not top_ports_free(base):
        pytest.skip(f"ports {base}..{MAX_PORT} are not free here")
    sd = tmp_path / "targets.json"

    async def go():
        other = hold(MAX_PORT - 1)
        try:
            async with fleet_at(base, 1, sd_file=sd, max_replicas=3) as (fleet, s, url):
                for _ in range(2):  # a retry fails the same clear way and changes nothing
                    r = await s.post(url + "/admin/replicas", json={"replicas": 3})
                    body = await r.json()
                    assert r.status == 503, body
                    assert (
                        "no free port" in body["error"]["message"]
                        and str(MAX_PORT - 1) in body["error"]["message"]
                    )
                    st = body["state"]
                    assert (st["desired"], st["ready"], st["starting"]) == (2, 2, 0)  # desired == running
                    assert [m["port"] for m in st["replicas"]] == [MAX_PORT - 2, MAX_PORT]
                    assert sd_targets(sd) == [f"127.0.0.1:{MAX_PORT - 2}", f"127.0.0.1:{MAX_PORT}"]
                    assert replica_loops() == 2  # nothing leaked from the failed start
                    assert (await (await s.get(url + "/admin/replicas")).json())["desired"] == 2
                other.close()
                r = await s.post(url + "/admin/replicas", json={"replicas": 3})
                assert r.status == 200 and (await r.json())["ready"] == 3
                assert len(sd_targets(sd)) == 3 and replica_loops() == 3
        finally:
            other.close()

    asyncio.run(go())


def test_admin_caps_the_count_and_refuses_bad_bodies():
    async def go():
        port = free_port_block(4)
        async with fleet_at(port, 1, max_replicas=3) as (fleet, s, url):
            r = await s.post(url + "/admin/replicas", json={"replicas": 4})
            err = (await r.json())["error"]
            assert r.status == 400 and err["param"] == "replicas" and "maximum of 3" in err["message"]
            for raw in (
                b"[" * 50_000 + b"]" * 50_000,
                b"{nope",
                b"[3]",
                b'{"replicas": true}',
                b'{"replicas": -1}',
            ):
                r = await s.post(url + "/admin/replicas", data=raw)
                assert r.status == 400, raw[:20]
                assert (await r.json())["error"]["message"]
            assert fleet.state()["desired"] == 1 and replica_loops() == 1
            assert (await (await s.get(url + "/admin/replicas")).json())["max_replicas"] == 3

    asyncio.run(go())


def test_a_replica_that_cannot_start_leaves_nothing_behind():
    async def go():
        # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this machine: binding it fails (nothing is sent)
        fleet = Fleet(PROFILE, free_port_block(3), host="192.0.2.1", cold_start_s=0.0)
        with pytest.raises(BurstpilotError, match="did not start on port"):
            await fleet.start(1)
        assert fleet.members == [] and replica_loops() == 0

    asyncio.run(go())


def test_fleet_refuses_a_layout_past_the_last_port():
    with pytest.raises(BurstpilotError, match="room for 5 replicas"):
        Fleet(PROFILE, MAX_PORT - 5, max_replicas=64)
    Fleet(PROFILE, MAX_PORT - 5, max_replicas=5)
