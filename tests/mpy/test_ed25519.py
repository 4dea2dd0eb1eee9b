"""Ed25519 verification and SHA-512 on the terminal (edge/ed25519.py).

Runs under CPython (pytest) and real MicroPython. The vectors are TEST 1,
TEST 2 and TEST 3 of RFC 8032 section 7.1 and the SHA-512 examples of
FIPS 180-4 (NIST's "abc" and the 896-bit message); a signature made by
another implementation (libsodium through PyNaCl) is checked in
tests/unit/test_ota_bundle.py.
"""

from binascii import unhexlify

from edge.ed25519 import sha512, verify

H = unhexlify
RFC8032 = (
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
)


def test_rfc8032_vectors_verify():
    for pub, msg, sig in RFC8032:
        assert verify(H(pub), H(msg), H(sig))


def test_changed_message_key_or_signature_fails():
    pub, msg, sig = (H(x) for x in RFC8032[2])
    assert not verify(pub, msg + b"\x00", sig)
    assert not verify(pub, b"\xaf\x83", sig)
    assert not verify(H(RFC8032[1][0]), msg, sig)  # another key
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        assert not verify(pub, msg, bytes(bad))


def test_malformed_input_is_false_not_an_exception():
    pub, msg, sig = (H(x) for x in RFC8032[1])
    assert not verify(pub[:31], msg, sig)
    assert not verify(pub, msg, sig[:63])
    assert not verify(b"\xff" * 32, msg, sig)  # y >= p: no point
    # S + L: same point, but S is not reduced, so it is refused
    s = int.from_bytes(sig[32:], "little") + 2**252 + 27742317777372353535851937790883648493
    assert not verify(pub, msg, sig[:32] + s.to_bytes(32, "little"))


def test_sha512_known_answers():
    assert sha512(b"abc") == H(
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    )
    long = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
    long += b"jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
    assert sha512(long) == H(
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
    )
    assert len(sha512(b"x" * 300)) == 64  # several blocks
