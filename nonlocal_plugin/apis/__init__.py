"""Running mmdet and mmseg configs: set-up, checks, train and test."""
from .checks import SetupError, check_checkpoints, check_data, prepare_toy_data
from .dist import init_cpu_process_group, setup_launcher
from .run import (
    build_runner,
    codebase_of,
    load_config,
    prepare_test,
    prepare_train,
    test,
    train,
)

__all__ = [
    'SetupError', 'build_runner', 'check_checkpoints', 'check_data',
    'codebase_of', 'init_cpu_process_group', 'load_config', 'prepare_test',
    'prepare_toy_data', 'prepare_train', 'setup_launcher', 'test', 'train'
]
