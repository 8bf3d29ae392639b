"""The Nova compute API as a source (``starcompactor instances --api``,
``hosts --api``): credentials, microversions, a retrying client, rows, the
Beam readers."""
from starcompactor.pipeline.sources.nova_api.credentials import (
    CredentialSource, credential_source)
from starcompactor.pipeline.sources.nova_api.hosts import NovaApiHostSource
from starcompactor.pipeline.sources.nova_api.source import NovaApiSource

__all__ = ['CredentialSource', 'NovaApiHostSource', 'NovaApiSource',
           'credential_source']
