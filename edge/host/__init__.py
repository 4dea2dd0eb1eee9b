"""Host HAL (CPython only): the terminal's hardware interfaces on a PC.

pyserial stands in for ``machine.UART`` so the same agent and Modbus master
run as a virtual terminal or drive a USB RS-485 adapter from the installer's
laptop. Never copied to a board.
"""
