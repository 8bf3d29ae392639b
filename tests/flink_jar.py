"""Whether the Flink tests can run here. They need Beam's Flink job server
jar: STARCOMPACTOR_FLINK_JOB_SERVER_JAR, or the one Maven resolves (asked
once per session, about 9 s). Without one they skip and say why; a missing
tool (java, mvn) fails them, it never skips."""
import functools
import os

import pytest

from starcompactor.pipeline import runners
from starcompactor.pipeline.errors import UserError


@functools.cache
def maven_serves_job_server() -> bool:
    """Whether flink_job_server_jar() gets the jar (from the runner cache
    or Maven), or Maven answers that it has no such artifact."""
    try:
        runners.flink_job_server_jar()
    except runners.RunnerUnavailable:
        return False
    except UserError as e:
        pytest.fail(str(e), pytrace=False)
    return True


def skip_without_job_server_jar():
    if not (os.environ.get(runners.FLINK_JAR_ENV)
            or maven_serves_job_server()):
        pytest.skip(
            'no Beam Flink job server jar: this machine\'s Maven repository '
            f'does not serve {runners.flink_job_server_coordinates()}; set '
            f'{runners.FLINK_JAR_ENV} to run it')
