"""The Nova compute API as a source (``starcompactor instances --api``):
credentials, microversions, a retrying client, rows, the Beam reader."""
from starcompactor.pipeline.sources.nova_api.credentials import (
    CredentialSource, credential_source)
from starcompactor.pipeline.sources.nova_api.source import NovaApiSource

__all__ = ['CredentialSource', 'NovaApiSource', 'credential_source']
