"""starcompactor: anonymized workload traces from OpenStack Nova, on Beam.

Also usable as ``--setup_file ./setup.py`` for remote runners (Dataflow,
Flink with PROCESS/DOCKER workers), which build and install it on workers.
"""
from setuptools import setup

# The repository keeps the design's top-level folders; installed, they live
# under one package so that no generic name lands in site-packages.
PACKAGES = {
    'starcompactor': 'starcompactor',
    'starcompactor.pipeline': 'pipeline',
    'starcompactor.pipeline.sources': 'pipeline/sources',
    'starcompactor.pipeline.sources.dump': 'pipeline/sources/dump',
    'starcompactor.pipeline.sources.nova_api': 'pipeline/sources/nova_api',
    'starcompactor.pipeline.sinks': 'pipeline/sinks',
    'starcompactor.transforms': 'transforms',
    'starcompactor.synth': 'synth',
    'starcompactor.report': 'report',
}


# --runner DaskRunner (pipeline/dask_runner.py); the floor is that of Beam's
# own extra, apache-beam[dask]. The tests run on a Dask cluster too.
DASK = ['dask[distributed]>=2024.4.2']


def requirements():
    with open('requirements.txt') as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip()]


setup(
    name='starcompactor',
    version='0.1.0',
    description='Anonymized instance-event traces from OpenStack Nova, '
                'on Apache Beam',
    python_requires='>=3.10',
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={'starcompactor.pipeline': ['demo/*.sql.gz'],
                  'starcompactor.synth': ['sql/*.sql']},
    install_requires=requirements(),
    # duckdb: the tests read the Parquet output with a reader besides
    # pyarrow's.
    extras_require={'dask': DASK,
                    'test': ['pytest>=7', 'duckdb>=1.0', *DASK]},
    entry_points={'console_scripts': [
        'starcompactor = starcompactor.pipeline.cli:main']},
)
