"""SIP digest credentials: the HA1 values a virtual server checks passwords against."""

import hashlib
import secrets

PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789"


def digest_ha1(username: str, realm: str, password: str) -> tuple[str, str]:
    """HA1 for MD5 (RFC 2617) and SHA-256 (RFC 8760), so the plaintext need not be kept."""
    secret = f"{username}:{realm}:{password}".encode()
    return hashlib.md5(secret).hexdigest(), hashlib.sha256(secret).hexdigest()


def random_sip_password(length: int = 12) -> str:
    """A password a person can type into a phone's keypad menu without ambiguous characters."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def new_callback_secret() -> str:
    """A call-back shared secret: 256 random bits as 64 hex digits, easy to paste anywhere."""
    return secrets.token_hex(32)
