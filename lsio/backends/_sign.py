"""Request signing for S3 and S3-compatible stores, through botocore's SigV4 (``lsio[s3]``).

lsio never implements the crypto itself. Credentials come from botocore's usual chain
(environment variables, ``~/.aws/credentials`` and ``~/.aws/config``, SSO, instance roles).
"""

from __future__ import annotations

from typing import Any

__all__ = ["S3Signer", "find_s3_signer"]


class S3Signer:
    """Signs GET/HEAD requests with AWS Signature Version 4."""

    def __init__(self, credentials: Any, region: str) -> None:
        self._credentials = credentials
        self.region = region

    def headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, headers=headers)
        # refreshable credentials (SSO, roles) renew themselves here
        S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self.region).add_auth(
            request)
        return dict(request.headers.items())


def find_s3_signer(region: str, anonymous: bool | None) -> S3Signer | None:
    """A signer if credentials are found (``anonymous=None``) or required (``False``)."""
    if anonymous:
        return None
    try:
        import botocore.session
    except ImportError:
        if anonymous is False:
            raise ImportError("lsio: signed S3 access needs botocore: pip install 'lsio[s3]'"
                              ) from None
        return None  # no signer installed: public buckets still work
    session = botocore.session.get_session()
    # one quick try of the instance-metadata service, not botocore's 1 s x 1 default wait
    session.set_config_variable("metadata_service_timeout", 0.5)
    session.set_config_variable("metadata_service_num_attempts", 1)
    credentials = session.get_credentials()
    if credentials is None:
        if anonymous is False:
            raise PermissionError("lsio: HttpOptions(anonymous=False) but botocore found no "
                                  "AWS credentials (environment, ~/.aws, or an instance role)")
        return None
    return S3Signer(credentials, region)
