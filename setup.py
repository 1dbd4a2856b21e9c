from setuptools import find_packages, setup

setup(
    name='nonlocal_plugin',
    version='0.1.0',
    description='Non-local, GC and DNL attention blocks as OpenMMLab plugins',
    packages=find_packages(include=['nonlocal_plugin', 'nonlocal_plugin.*']),
    python_requires='>=3.11',
    install_requires=[
        'torch==2.13.0',
        'mmcv==2.1.0',
        'mmengine==0.10.7',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'pycocotools',
        # mmsegmentation 1.2.2 imports these without declaring them.
        'ftfy',
        'regex',
    ],
    extras_require={
        'tests': ['pytest>=7', 'ruff'],
    },
)
