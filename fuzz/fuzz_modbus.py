"""atheris harness for the Modbus RTU reply parser (``edge.modbus.parse_response``).

Contract under test: for any bytes and any valid read request (unit, function
code 1-4, count), the parser returns ``(values, used)`` for a well-formed
reply to that request or raises one of the typed ``edge.errors.ModbusError``
subclasses; an accepted reply is CRC-correct, addressed to the unit and
function asked for, and carries exactly ``count`` values. Anything else is a
crash.

    python fuzz/fuzz_modbus.py -runs=1000000
"""

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from edge import modbus
    from edge.errors import ModbusError


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    unit = fdp.ConsumeIntInRange(0, 255)
    fc = fdp.ConsumeIntInRange(1, 4)
    top = modbus.MAX_BITS if fc <= 2 else modbus.MAX_REGISTERS
    count = fdp.ConsumeIntInRange(1, top)
    with_crc = fdp.ConsumeBool()
    buf = fdp.ConsumeBytes(fdp.remaining_bytes())
    if with_crc and len(buf) >= 2:  # often a reply that passes the CRC check
        buf = buf + modbus.crc16(buf).to_bytes(2, "little")
    try:
        values, used = modbus.parse_response(buf, unit, fc, count)
    except ModbusError:
        return
    if not (5 <= used <= len(buf) and buf[0] == unit and buf[1] == fc):
        raise AssertionError("accepted a reply for another request: %s" % buf.hex())
    if modbus.crc16(buf, 0, used) != 0 or len(values) != count:
        raise AssertionError("accepted a damaged reply: %s" % buf.hex())


def main(argv: list[str]) -> None:
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
