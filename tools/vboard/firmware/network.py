# Virtual board firmware: `network` as the ESP32 port has it (ports/esp32:
# modnetwork_globals.h, network_wlan.c), the station interface bridged to the
# board's simulated access point (tools/virtual_board.mjs: --wlan, and the
# control interface's "wlan" command that takes the access point away).
#
# As on the board: WLAN(STA_IF) is one object per interface; connect() needs
# active(True) (OSError "Wifi Not Started"), returns at once and the link comes
# up later; a lost link is retried for ever while connect was asked for;
# status() gives STAT_* or the disconnect reason, status("rssi") the signal
# (OSError "Wifi Not Connected" without a link).
import json

import _vb

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
MODE_11B = 1
MODE_11G = 2
MODE_11N = 4
AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4

_hostname = ["espressif"]


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name
    return None


def country(code=None):
    return "01" if code is None else None


class WLAN:
    IF_STA = 0
    IF_AP = 1
    SEC_OPEN = 0
    SEC_WEP = 1
    SEC_WPA = 2
    SEC_WPA2 = 3
    SEC_WPA_WPA2 = 4
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2
    _objs = {}

    def __new__(cls, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        obj = WLAN._objs.get(interface_id)
        if obj is None:
            obj = object.__new__(cls)
            obj._if = interface_id
            WLAN._objs[interface_id] = obj
        return obj

    def __init__(self, interface_id=STA_IF):
        pass

    def _state(self):
        return json.loads(_vb.query("wlan_state", "", self._if))

    def active(self, is_active=None):
        if is_active is None:
            return self._state()["active"]
        _vb.call("wlan_active", "", self._if, 1 if is_active else 0)
        return bool(is_active)

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF:
            raise OSError("STA required")
        _vb.call("wlan_connect", json.dumps([ssid, key]))

    def disconnect(self):
        _vb.call("wlan_disconnect")

    def isconnected(self):
        return self._state()["connected"] if self._if == STA_IF else False

    def status(self, param=None):
        st = self._state()
        if param is None:
            return st["status"] if self._if == STA_IF else None
        if param == "rssi":
            if self._if != STA_IF:
                raise OSError("STA required")
            if not st["connected"]:
                raise OSError("Wifi Not Connected")
            return st["rssi"]
        if param == "stations":
            if self._if != AP_IF:
                raise OSError("AP required")
            return []
        raise ValueError("unknown status param")

    def scan(self):
        if not self._state()["active"]:
            raise OSError("STA must be active")
        return [tuple(ap) for ap in json.loads(_vb.query("wlan_scan"))]

    def config(self, *args, **kwargs):
        if args and kwargs:
            raise TypeError("either pos or kw args are allowed")
        st = self._state()
        if kwargs:
            for key in kwargs:
                if key not in (
                    "ssid",
                    "essid",
                    "key",
                    "password",
                    "channel",
                    "hostname",
                    "dhcp_hostname",
                    "reconnects",
                    "txpower",
                    "pm",
                    "security",
                    "authmode",
                    "hidden",
                    "mac",
                ):
                    raise ValueError("unknown config param")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        param = args[0]
        if param == "mac":
            return bytes(st["mac"])
        if param in ("ssid", "essid"):
            return st["ssid"]
        if param in ("hostname", "dhcp_hostname"):
            return _hostname[0]
        if param == "channel":
            return 6
        if param == "reconnects":
            return -1
        if param == "txpower":
            return 20
        if param == "pm":
            return WLAN.PM_PERFORMANCE
        raise ValueError("unknown config param")

    def ifconfig(self, config=None):
        if config is not None:
            return None
        return tuple(self._state()["ifconfig"])

    def ipconfig(self, *args, **kwargs):
        if args == ("addr4",):
            cfg = self._state()["ifconfig"]
            return (cfg[0], cfg[1])
        if args == ("dhcp4",):
            return True
        return None
