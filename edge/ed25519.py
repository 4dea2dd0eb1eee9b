"""Ed25519 signature verification (RFC 8032) for a MicroPython terminal.

Only verification: terminals check the operator's signature on an update
bundle's manifest and never sign. It runs on MicroPython's arbitrary-size
integers, with the SHA-512 it needs written out here because ESP32 ports
have only SHA-1 and SHA-256 in ``hashlib``. Imported only while an update
runs (``edge.ota``), so none of it stays on the agent's heap.

``verify(public_key, message, signature)`` returns True or False; it never
raises for bad input (wrong lengths, a point not on the curve, S not
reduced). It is the cofactorless check of RFC 8032 section 5.1.7: the
encoding of [S]B - [k]A must equal R, as the reference implementation and
libsodium do. Constant time does not matter here: nothing secret is
handled.

Curve constants are from RFC 8032 section 5.1; SHA-512's from FIPS 180-4
section 4.2.3 and 5.3.5.
"""

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = (2 * _D) % _P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


# -- points in extended coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, xy = T/Z


def _add(p, q):
    """RFC 8032 section 5.1.4, "add"."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p):
    """RFC 8032 section 5.1.4, "dbl"."""
    x1, y1, z1, _t = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    s = x1 + y1
    e = h - s * s % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decompress(s):
    """The point encoded by 32 bytes ``s``, or None (RFC 8032 section 5.1.3)."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    v3 = v * v * v % _P
    x = u * v3 * pow(u * v3 * v3 * v % _P, (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 != u:
        if vx2 != (-u) % _P:
            return None
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode(p):
    x, y, z, _t = p
    zi = pow(z, _P - 2, _P)
    x = x * zi % _P
    y = y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _neg(p):
    x, y, z, t = p
    return ((_P - x) % _P, y, z, (_P - t) % _P)


def verify(public_key, message, signature):
    """True if ``signature`` (64 bytes) is ``public_key``'s (32 bytes) on ``message``."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    r = bytes(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False  # not reduced: RFC 8032 says reject (no malleability)
    a = _decompress(public_key)
    if a is None:
        return False
    k = int.from_bytes(sha512(r + bytes(public_key) + bytes(message)), "little") % _L
    # [s]B + [k](-A), both scalars in one pass (Shamir's trick): 253 doublings.
    b = (_BX, _BY, 1, _BX * _BY % _P)
    na = _neg(a)
    both = _add(b, na)
    q = (0, 1, 1, 0)
    for i in range(255, -1, -1):
        q = _double(q)
        bs = (s >> i) & 1
        bk = (k >> i) & 1
        if bs and bk:
            q = _add(q, both)
        elif bs:
            q = _add(q, b)
        elif bk:
            q = _add(q, na)
    return _encode(q) == r


# -- SHA-512 (FIPS 180-4), for the one hash a verification needs

_M64 = 0xFFFFFFFFFFFFFFFF
_H0 = (
    0x6A09E667F3BCC908,
    0xBB67AE8584CAA73B,
    0x3C6EF372FE94F82B,
    0xA54FF53A5F1D36F1,
    0x510E527FADE682D1,
    0x9B05688C2B3E6C1F,
    0x1F83D9ABFB41BD6B,
    0x5BE0CD19137E2179,
)
_K = (
    0x428A2F98D728AE22, 0x7137449123EF65CD, 0xB5C0FBCFEC4D3B2F, 0xE9B5DBA58189DBBC,
    0x3956C25BF348B538, 0x59F111F1B605D019, 0x923F82A4AF194F9B, 0xAB1C5ED5DA6D8118,
    0xD807AA98A3030242, 0x12835B0145706FBE, 0x243185BE4EE4B28C, 0x550C7DC3D5FFB4E2,
    0x72BE5D74F27B896F, 0x80DEB1FE3B1696B1, 0x9BDC06A725C71235, 0xC19BF174CF692694,
    0xE49B69C19EF14AD2, 0xEFBE4786384F25E3, 0x0FC19DC68B8CD5B5, 0x240CA1CC77AC9C65,
    0x2DE92C6F592B0275, 0x4A7484AA6EA6E483, 0x5CB0A9DCBD41FBD4, 0x76F988DA831153B5,
    0x983E5152EE66DFAB, 0xA831C66D2DB43210, 0xB00327C898FB213F, 0xBF597FC7BEEF0EE4,
    0xC6E00BF33DA88FC2, 0xD5A79147930AA725, 0x06CA6351E003826F, 0x142929670A0E6E70,
    0x27B70A8546D22FFC, 0x2E1B21385C26C926, 0x4D2C6DFC5AC42AED, 0x53380D139D95B3DF,
    0x650A73548BAF63DE, 0x766A0ABB3C77B2A8, 0x81C2C92E47EDAEE6, 0x92722C851482353B,
    0xA2BFE8A14CF10364, 0xA81A664BBC423001, 0xC24B8B70D0F89791, 0xC76C51A30654BE30,
    0xD192E819D6EF5218, 0xD69906245565A910, 0xF40E35855771202A, 0x106AA07032BBD1B8,
    0x19A4C116B8D2D0C8, 0x1E376C085141AB53, 0x2748774CDF8EEB99, 0x34B0BCB5E19B48A8,
    0x391C0CB3C5C95A63, 0x4ED8AA4AE3418ACB, 0x5B9CCA4F7763E373, 0x682E6FF3D6B2B8A3,
    0x748F82EE5DEFB2FC, 0x78A5636F43172F60, 0x84C87814A1F0AB72, 0x8CC702081A6439EC,
    0x90BEFFFA23631E28, 0xA4506CEBDE82BDE9, 0xBEF9A3F7B2C67915, 0xC67178F2E372532B,
    0xCA273ECEEA26619C, 0xD186B8C721C0C207, 0xEADA7DD6CDE0EB1E, 0xF57D4F7FEE6ED178,
    0x06F067AA72176FBA, 0x0A637DC5A2C898A6, 0x113F9804BEF90DAE, 0x1B710B35131C471B,
    0x28DB77F523047D84, 0x32CAAB7B40C72493, 0x3C9EBE0A15C9BEBC, 0x431D67C49C100D4C,
    0x4CC5D4BECB3E42B6, 0x597F299CFC657E2A, 0x5FCB6FAB3AD6FAEC, 0x6C44198C4A475817,
)  # fmt: skip


def _ror(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def sha512(data):
    """SHA-512 digest (64 bytes) of ``data``."""
    n = len(data)
    msg = bytes(data) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    h = list(_H0)
    w = [0] * 80
    for off in range(0, len(msg), 128):
        for i in range(16):
            w[i] = int.from_bytes(msg[off + 8 * i : off + 8 * i + 8], "big")
        for i in range(16, 80):
            x = w[i - 15]
            y = w[i - 2]
            s0 = _ror(x, 1) ^ _ror(x, 8) ^ (x >> 7)
            s1 = _ror(y, 19) ^ _ror(y, 61) ^ (y >> 6)
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & _M64
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            t1 = (
                hh + (_ror(e, 14) ^ _ror(e, 18) ^ _ror(e, 41)) + ((e & f) ^ (~e & g)) + _K[i] + w[i]
            ) & _M64
            t2 = ((_ror(a, 28) ^ _ror(a, 34) ^ _ror(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))) & _M64
            hh = g
            g = f
            f = e
            e = (d + t1) & _M64
            d = c
            c = b
            b = a
            a = (t1 + t2) & _M64
        for i, v in enumerate((a, b, c, d, e, f, g, hh)):
            h[i] = (h[i] + v) & _M64
    out = b""
    for v in h:
        out += v.to_bytes(8, "big")
    return out
