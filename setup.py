"""Packaging. Dependencies here are the ranges the code needs; the exact
stack the project is tested on is pinned in ``requirements/pinned.txt``,
which the Makefile installs with ``-c``."""
from setuptools import find_packages, setup

MMDET = [
    'mmdet>=3.3.0,<3.4',
    'pycocotools',
]
# tools/analyze_attention.py draws with it (mmdet and mmseg need it too).
ANALYSIS = ['matplotlib']
MMSEG = [
    'mmsegmentation>=1.2.2,<1.3',
    # mmsegmentation 1.2.2 imports these without declaring them.
    'ftfy',
    'regex',
]

setup(
    name='nonlocal_plugin',
    version='0.1.0',
    description='Non-local, GC and DNL attention blocks as OpenMMLab plugins',
    packages=find_packages(include=['nonlocal_plugin', 'nonlocal_plugin.*']),
    python_requires='>=3.8',
    # The blocks need only these. No upper pin on torch: none is known to
    # break; the oldest tested is 2.1.2 (README, compatibility matrix).
    install_requires=[
        'torch>=2.1',
        'mmcv>=2.0.0,<2.2.0',
        'mmengine>=0.10.0,<1.0',
        'numpy',
    ],
    extras_require={
        'mmdet': MMDET,
        'mmseg': MMSEG,
        'analysis': ANALYSIS,
        'all': MMDET + MMSEG + ANALYSIS,
        # onnx/onnxruntime: the export tests (skipped without them);
        # onnxscript: the dynamo exporter's (torch >= 2.5).
        'tests': [
            'pytest>=7',
            'ruff',
            'vermin',
            'onnx>=1.14',
            'onnxruntime>=1.16',
            "onnxscript>=0.7; python_version>='3.9'",
        ],
    },
)
