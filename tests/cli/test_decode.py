"""`ilp decode` through click's runner."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from click.testing import CliRunner
from ilp_cli.exit_codes import ExitCode
from ilp_cli.main import cli

from ilp import ErrorCode, Prepare, Reject
from ilp.packet import AmountTooLargeData

PREPARE_HEX = (
    "0c68000000000000006b323031373132323330313231343035343974e1136dc71c9e5f283bec83461cbf1261c4"
    "014f72d48f8dd65453a0b84e7de10d6578616d706c652e616c696365205db343fdc41898f6df4202329139dc24"
    "2dd0f558a811b46b28918fdab37c6cb0"
)


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_prepare_as_json() -> None:
    code, out, err = run("decode", "--json", PREPARE_HEX)
    assert code == 0, err
    assert json.loads(out) == {
        "type": "ilp_prepare",
        "amount": "107",
        "expires_at": "2017-12-23T01:21:40.549Z",
        "execution_condition": "74e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de1",
        "destination": "example.alice",
        "data": "5db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0",
    }
    assert err == ""


def test_prepare_as_tree_from_stdin_and_base64() -> None:
    code, out, _ = run("decode", "-", stdin=PREPARE_HEX[:40] + "\n  " + PREPARE_HEX[40:] + "\n")
    assert code == 0
    assert "ilp_prepare" in out
    assert "amount: 107" in out
    assert "destination: example.alice" in out
    import base64

    b64 = base64.b64encode(bytes.fromhex(PREPARE_HEX)).decode()
    code, out2, _ = run("decode", "--base64", b64)
    assert code == 0
    assert out2 == out


def test_f08_reject_shows_its_data() -> None:
    reject = Reject(
        ErrorCode("F08"), "test.connector", "too much", AmountTooLargeData(1000, 100).encode()
    )
    code, out, _ = run("decode", "--json", reject.encode().hex())
    assert code == 0
    plain = json.loads(out)
    assert plain["code"] == "F08"
    assert plain["amount_too_large"] == {
        "type": "amount_too_large_data",
        "received_amount": "1000",
        "maximum_amount": "100",
    }


def test_bad_input_says_field_and_offset_without_traceback() -> None:
    code, out, err = run("decode", "0c6800")
    assert code == ExitCode.INVALID_INPUT
    assert out == ""
    assert err.startswith("Error: contents at byte 2: truncated")
    assert "Traceback" not in err


def test_bad_hex() -> None:
    code, _, err = run("decode", "zz")
    assert code == ExitCode.INVALID_INPUT
    assert "not valid hex" in err


def test_hint_for_btp_bytes() -> None:
    code, _, err = run("decode", "0600000001" + "00")
    assert code == ExitCode.INVALID_INPUT
    assert "try --btp" in err


def test_u64_amount_is_exact() -> None:
    prepare = Prepare(2**64 - 1, datetime(2030, 1, 1, tzinfo=UTC), b"\x00" * 32, "g.example", b"")
    code, out, _ = run("decode", "--json", prepare.encode().hex())
    assert code == 0
    assert json.loads(out)["amount"] == "18446744073709551615"


def test_help_lists_exit_codes() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for exit_code in ExitCode:
        assert f"{int(exit_code):>3}  {exit_code.meaning}" in out


SECRET = bytes(range(32))


def _stream_prepare() -> tuple[Prepare, bytes]:
    from ilp.packet import PacketType
    from ilp.stream.crypto import StreamCrypto
    from ilp.stream.packet import StreamMaxMoney, StreamMoney, StreamPacket

    packet = StreamPacket(
        sequence=7,
        ilp_packet_type=PacketType.PREPARE,
        prepare_amount=990,
        frames=(StreamMoney(stream_id=1, shares=1), StreamMaxMoney(1, 2**64 - 1, 500)),
    )
    crypto = StreamCrypto(SECRET)
    data = crypto.encrypt_packet(packet)
    prepare = Prepare(
        1000, datetime(2030, 1, 1, tzinfo=UTC), crypto.condition(data), "test.bob.abc", data
    )
    return prepare, data


def test_secret_decrypts_stream_data_of_ilp_packet() -> None:
    import base64

    prepare, data = _stream_prepare()
    b64 = base64.b64encode(SECRET).decode()
    code, out, err = run("decode", "--json", "--secret", b64, prepare.encode().hex())
    assert code == 0, err
    stream = json.loads(out)["stream"]
    assert stream["type"] == "stream_packet"
    assert stream["sequence"] == "7"
    assert stream["prepare_amount"] == "990"
    assert [f["type"] for f in stream["frames"]] == ["stream_money", "stream_max_money"]
    assert stream["frames"][1]["receive_max"] == "18446744073709551615"
    assert b64 not in out and b64 not in err
    # Raw encrypted STREAM data works too, and so does the secret from the environment.
    result = CliRunner().invoke(
        cli, ["decode", "--json", "--stream", data.hex()], env={"ILP_SHARED_SECRET": b64}
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sequence"] == "7"


def test_wrong_secret_is_a_clear_error_without_the_secret() -> None:
    import base64

    prepare, _ = _stream_prepare()
    wrong = base64.b64encode(b"\x01" * 32).decode()
    code, out, err = run("decode", "--secret", wrong, prepare.encode().hex())
    assert code == ExitCode.INVALID_INPUT
    assert "cannot decrypt" in err and wrong not in err
    assert out == ""


def test_plain_stream_packet() -> None:
    code, out, err = run("decode", "--stream", "--json", "010c010001000100")
    assert code == 0, err
    assert json.loads(out) == {
        "type": "stream_packet",
        "sequence": "0",
        "ilp_packet_type": "prepare",
        "prepare_amount": "0",
        "frames": [],
    }


def test_ildcp_request_and_response() -> None:
    from ilp.ildcp import IldcpResponse, make_request

    request = make_request(datetime(2030, 1, 1, tzinfo=UTC))
    code, out, _ = run("decode", "--json", request.encode().hex())
    assert code == 0
    assert json.loads(out)["ildcp"] == {"type": "ildcp_request"}
    fulfill = IldcpResponse("test.parent.child", 9, "XRP").to_fulfill()
    code, out, _ = run("decode", "--json", fulfill.encode().hex())
    assert code == 0
    ildcp = json.loads(out)["ildcp"]
    assert ildcp["client_address"] == "test.parent.child"
    assert ildcp["asset_code"] == "XRP" and ildcp["asset_scale"] == 9


def test_ccp_update_in_prepare() -> None:
    from ilp.ccp import Route, RouteUpdateRequest

    update = RouteUpdateRequest(
        routing_table_id=b"\x01" * 16,
        current_epoch_index=5,
        from_epoch_index=0,
        to_epoch_index=5,
        hold_down_time=45000,
        speaker="test.speaker",
        new_routes=(Route("test.a", ("test.speaker",), b"\x02" * 32, ()),),
        withdrawn_routes=("test.b",),
    )
    prepare = update.to_prepare(datetime(2030, 1, 1, tzinfo=UTC))
    code, out, err = run("decode", "--json", prepare.encode().hex())
    assert code == 0, err
    ccp = json.loads(out)["ccp"]
    assert ccp["speaker"] == "test.speaker"
    assert ccp["new_routes"][0]["prefix"] == "test.a"
    assert ccp["withdrawn_routes"] == ["test.b"]
    code, _, err = run("decode", prepare.encode().hex()[:-2] + "ff")
    assert code == ExitCode.INVALID_INPUT
    assert "CCP" in err
