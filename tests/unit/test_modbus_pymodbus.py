"""edge/modbus.py agrees byte for byte with pymodbus' own RTU framer (CPython only).

pymodbus is an independent, widely used implementation: requests we build
must be the frames its framer builds and its server-side decoder accepts, and
replies its framer builds must decode to the same values with our parser.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from edge import modbus
from edge.errors import ModbusExceptionResponse

REQUESTS = {
    1: ReadCoilsRequest,
    2: ReadDiscreteInputsRequest,
    3: ReadHoldingRegistersRequest,
    4: ReadInputRegistersRequest,
}
CLIENT = FramerRTU(DecodePDU(is_server=False))
SERVER = FramerRTU(DecodePDU(is_server=True))


def read_args():
    """(unit, fc, addr, count) within the protocol's limits."""

    def with_count(fc: int):
        limit = modbus.MAX_BITS if fc <= 2 else modbus.MAX_REGISTERS
        return st.integers(1, limit).flatmap(
            lambda count: st.tuples(
                st.integers(1, 247),
                st.just(fc),
                st.integers(0, 0x10000 - count),
                st.just(count),
            )
        )

    return st.sampled_from((1, 2, 3, 4)).flatmap(with_count)


@given(read_args())
def test_request_frames_are_pymodbus_frames(args):
    unit, fc, addr, count = args
    ours = modbus.build_read_request(unit, fc, addr, count)
    theirs = CLIENT.buildFrame(REQUESTS[fc](address=addr, count=count, dev_id=unit))
    assert ours == theirs
    used, pdu = SERVER.handleFrame(ours, 0, 0)
    assert used == 8 and pdu is not None
    assert (pdu.dev_id, pdu.function_code, pdu.address, pdu.count) == (unit, fc, addr, count)
    assert modbus.parse_request(theirs) == (unit, fc, addr, count)


@given(
    st.integers(1, 247),
    st.sampled_from((3, 4)),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
)
def test_register_replies_agree(unit, fc, registers):
    cls = ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse
    theirs = SERVER.buildFrame(cls(registers=registers, dev_id=unit))
    values, used = modbus.parse_response(theirs, unit, fc, len(registers))
    assert values == registers
    assert used == len(theirs)
    ours = modbus.build_response(unit, fc, registers)
    assert ours == theirs
    used, pdu = CLIENT.handleFrame(ours, unit, 0)
    assert used == len(ours) and pdu is not None
    assert list(pdu.registers) == registers


@given(
    st.integers(1, 247),
    st.sampled_from((1, 2)),
    st.lists(st.booleans(), min_size=1, max_size=2000),
)
def test_bit_replies_agree(unit, fc, bits):
    cls = ReadCoilsResponse if fc == 1 else ReadDiscreteInputsResponse
    # pymodbus pads the bit list to whole bytes with False, as the spec says.
    theirs = SERVER.buildFrame(cls(bits=bits, dev_id=unit))
    values, used = modbus.parse_response(theirs, unit, fc, len(bits))
    assert values == [int(b) for b in bits]
    assert used == len(theirs)
    assert modbus.build_response(unit, fc, [int(b) for b in bits]) == theirs


@pytest.mark.parametrize("fc", [1, 2, 3, 4])
@pytest.mark.parametrize("code", [1, 2, 3, 4, 6, 11])
def test_exception_replies_agree(fc, code):
    theirs = SERVER.buildFrame(ExceptionResponse(fc, code, device_id=17))
    assert modbus.build_exception(17, fc, code) == theirs
    with pytest.raises(ModbusExceptionResponse) as err:
        modbus.parse_response(theirs, 17, fc, 1)
    assert err.value.code == code


@given(st.binary(max_size=300))
def test_crc_agrees_with_pymodbus(data):
    # pymodbus returns the CRC as the big-endian value of the two wire bytes.
    wire = FramerRTU.compute_CRC(data).to_bytes(2, "big")
    crc = modbus.crc16(data)
    assert bytes((crc & 0xFF, crc >> 8)) == wire
