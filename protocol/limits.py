"""Protocol constants: the version and every size limit.

Both sides enforce the same numbers, so a frame the terminal could encode is
always one the cloud accepts.  Changing a limit is a protocol change: update
``protocol/README.md`` and regenerate the vectors (``tools/gen_vectors.py``).
"""

VERSION = 1  # first element of every frame; anything else is bad_version

MAX_FRAME_BYTES = 4096  # whole encoded frame (one MQTT payload)
MAX_CHANNELS = 64  # channels per terminal; aliases are 0..MAX_CHANNELS-1
MAX_SAMPLES = 240  # samples per data frame (4 h of 1-min data)
MAX_DEPTH = 8  # nested containers, the frame's own array counts as 1
MAX_TID = 32  # terminal id length (ASCII, so chars == bytes)
MAX_STR = 64  # UTF-8 bytes of a name: channel name/unit, fw, map key, cmd
MAX_TEXT = 255  # UTF-8 bytes of free text: cfgack reason, config/cmd values
MAX_COND = 16  # UTF-8 bytes of an alarm condition code
MAX_COUNTERS = 32  # entries in a status frame's error-counter map
MAX_EXP = 9  # channel decimal exponent is -MAX_EXP..MAX_EXP
MAX_ACK_RANGES = 64  # [first, count] seq ranges in one ack frame
MAX_CHUNK = 3072  # bytes of a bundle file in one chunk frame (with its head, < 4096)

U32_MAX = 0xFFFFFFFF  # boot, seq, ts, counters, ids, versions
INT_MIN = -0x8000000000000000  # raw values and tree ints are signed 64-bit
INT_MAX = 0x7FFFFFFFFFFFFFFF
RSSI_MIN = -255
RSSI_MAX = 255
