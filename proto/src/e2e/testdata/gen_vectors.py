#!/usr/bin/env python3
"""Independent reference for the e2e test vectors (python3 + pyca/cryptography).

Regenerates chain_vectors.txt and envelope_vector.txt from the layout in docs/E2E-ENVELOPE.md;
the Rust tests must produce the same bytes.
"""
import hashlib
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def hkdf(ikm, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


chain_key = bytes([0x42]) * 32
lines = []
ck = chain_key
for i in range(4):
    mk = hkdf(ck, b"chatd e2e v1 message key")
    lines.append(f"{i} chain_key={ck.hex()} message_key={mk.hex()}\n")
    ck = hkdf(ck, b"chatd e2e v1 chain key")
open("chain_vectors.txt", "w").write("".join(lines))


def s16(b):
    return struct.pack(">H", len(b)) + b


chain_id = bytes([7]) * 16
index = 0
header = (
    bytes([1, 0x45])
    + bytes([1]) * 16
    + s16(b"alice")
    + hashlib.sha256(b"").digest()
    + s16(b"all")
    + chain_id
    + struct.pack(">I", index)
    + struct.pack(">Q", 1_764_327_600_000)
)
nonce = chain_id[:8] + struct.pack(">I", index)
msg_key = hkdf(chain_key, b"chatd e2e v1 message key")
ct = ChaCha20Poly1305(msg_key).encrypt(nonce, b"hello, world", header)
open("envelope_vector.txt", "w").write(
    f"header={header.hex()}\nnonce={nonce.hex()}\nciphertext={ct.hex()}\n"
)
