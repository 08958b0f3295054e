"""Encryption of the secrets the portal stores (the Hugging Face token), with a key derived
from SECRET_KEY. Rotating SECRET_KEY makes stored secrets unreadable: they must be set again.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "encrypt"]


def _fernet() -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"mlx-portal", info=b"stored-secrets"
    ).derive(settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """The plaintext; raises InvalidToken when the key changed or the value was tampered."""
    return _fernet().decrypt(ciphertext.encode()).decode()
